"""Figures of the demo (``tools/demo.py``, ``tools/visualize.py``): numpy + matplotlib.

Reads the runs ``tools/demo.py`` wrote (``<work_dir>/<task>/<method>/seed<k>/demo_run.json``: the
config, its overrides, the final checkpoint and the log dir) and draws, per task:

(a) ``<task>_tat_attention.png``: the TaT attention of a chosen teacher pixel over the student map,
    from the trained TaT loss of the ``tat`` run (its learned gamma / theta embeddings). In Eq. 7,
    ``f_s' = softmax(gamma(f_s) theta(f_t)^T) phi(f_s)`` and the loss compares row ``i`` of ``f_s'``
    with teacher pixel ``i``. Row ``i`` of the softmax matrix, ``a_ij = softmax_j(gamma(s_i) .
    theta(t_j))``, sums to one over ``j`` and its weights multiply the student *values*
    ``phi(s_j)``: it says from which student positions ``j`` the student rebuilds teacher pixel
    ``i``. So the meaningful "attention of teacher pixel i over the student map" is that row (the
    column ``a_.j`` is not a distribution and mixes different reconstructions). Note the logits pair
    the student query at ``i`` with the teacher keys at ``j`` (the query is the student's own
    position ``i``, which is also where teacher pixel ``i`` is). For patch-group TaT (seg) the
    softmax runs over the ``h*w`` positions of a group of ``g`` patches concatenated channel-wise:
    the row is drawn at the position ``j`` of each of the ``g`` patches of the pixel's group (the
    same weight for all of them, since those pixels are mixed together as one value); everything
    outside the group gets no weight.
(b) ``<task>_dam_areas.png``: the areas DAM picks on the teacher and the student feature, from the
    trained ``DAMDistillLoss`` of the ``tat_dam`` run (``DAM.detect``, drawn by
    :func:`~tat_mm.visualization.draw_dam_areas`).
(c) ``<task>_predictions.png``: teacher, student alone and TaT-distilled student on the same
    validation images (masks in the dataset palette; boxes with label and score; predicted labels).
(d) ``<task>_loss_curves.png``: training losses per method (seed 0) from MMEngine's
    ``vis_data/scalars.json``.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional

import numpy as np

SCOPES = {'cls': 'mmpretrain', 'seg': 'mmseg', 'det': 'mmdet'}
METHOD_LABELS = {'teacher': 'teacher', 'student': 'student alone', 'tat': 'student + TaT',
                 'tat_dam': 'student + TaT + DAM', 'fitnet': 'student + FitNet'}


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


# ----------------------------------------------------------------------------- loading runs
def load_run(work_dir: str, task: str, method: str, seed: int = 0) -> Optional[dict]:
    """The ``demo_run.json`` of one run, or None."""
    sub = 'teacher' if method == 'teacher' else osp.join(method, f'seed{seed}')
    path = osp.join(work_dir, task, sub, 'demo_run.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _cfg(run: dict):
    from mmengine.config import Config
    cfg = Config.fromfile(run['config'])
    cfg.merge_from_dict(run['options'])
    return cfg


def build_model(run: dict):
    """Build the run's model (distiller or plain) in its scope and load its checkpoint."""
    import importlib

    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    cfg = _cfg(run)
    scope = SCOPES[run['task']]
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:  # as MMEngine's Runner does (mmpretrain style)
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(model_cfg)
    load_checkpoint(model, run['checkpoint'], map_location='cpu', logger='silent')
    model.eval()
    return model, cfg


def val_samples(cfg, task: str, indices: List[int]):
    """Processed val samples (``pipeline`` applied) for ``indices``, plus their RGB images."""
    import importlib

    import mmcv
    from mmengine.registry import DefaultScope
    scope = SCOPES[task]
    datasets = importlib.import_module(f'{scope}.registry').DATASETS
    ds_cfg = cfg.val_dataloader.dataset.copy()
    ds_cfg.pop('indices', None)
    with DefaultScope.overwrite_default_scope(scope):
        dataset = datasets.build(ds_cfg)
    indices = [i for i in indices if i < len(dataset)]
    samples = [dataset[i] for i in indices]
    images = []
    for i in indices:
        info = dataset.get_data_info(i)
        if 'img' in info:  # classification: in memory
            images.append(np.asarray(info['img']))
        else:
            images.append(mmcv.imread(info['img_path'], channel_order='rgb'))
    return samples, images


def _preprocess(model, samples):
    from mmengine.dataset import pseudo_collate
    return model.data_preprocessor(pseudo_collate(samples), False)


def _features(distiller, data) -> Dict[str, Dict]:
    """Student and teacher tapped features of a batch."""
    student, teacher = distiller.tapped_features(data['inputs'], data['data_samples'])
    return dict(student=student, teacher=teacher)


# ----------------------------------------------------------------------------- (a) attention
def tat_attention_row(loss, student_feat, teacher_feat, y: int, x: int) -> np.ndarray:
    """Attention weights over the student map that rebuild teacher pixel (y, x).

    Args:
        loss: A trained ``TaTLoss`` (Eq. 7 form) or ``PatchGroupTaTLoss``.
        student_feat, teacher_feat (Tensor): (1, C, H, W) features of one image.
        y, x (int): The teacher pixel.

    Returns:
        tuple[np.ndarray, int]: (H, W) weights (see the module doc) and the number of keys the
        softmax runs over (1 / that is the uniform weight).
    """
    import torch
    from tat_mm.losses.patch_group_tat_loss import group_patches
    with torch.no_grad():
        q = loss.query_embed(student_feat.float())
        k = loss.key_embed(teacher_feat.float())
    _, _, h, w = q.shape
    if hasattr(loss, 'patch_grid'):  # patch-group TaT (alone or in HierarchicalTaTLoss)
        (patch, grid), g = loss.patch_grid(h, w), loss.group_size
        qg = group_patches(q, patch, grid, g)[0]  # (G, ph*pw, g, C)
        kg = group_patches(k, patch, grid, g)[0]
        ph, pw = patch
        p_idx = (y // ph) * grid[1] + (x // pw)
        grp, slot = divmod(p_idx, g)
        pos = (y % ph) * pw + (x % pw)
        query = qg[grp, pos].reshape(-1)  # channels of the g patches concatenated
        keys = kg[grp].reshape(ph * pw, -1)
        attn = torch.softmax(keys @ query / getattr(loss, 'temperature', 1.0), 0).numpy()
        out = np.zeros((grid[0] * ph, grid[1] * pw))
        for s in range(g):
            pi = grp * g + s
            if pi >= grid[0] * grid[1]:
                break
            r, c = divmod(pi, grid[1])
            out[r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] = attn.reshape(ph, pw)
        return out[:h, :w], ph * pw
    if getattr(loss, 'transposed', False):
        # per-pixel form: teacher pixel i queries the student keys
        logits = q[0].flatten(1).T @ k[0, :, y, x]  # theta(t_i) . gamma(s_j) over j
    else:
        logits = k[0].flatten(1).T @ q[0, :, y, x]  # gamma(s_i) . theta(t_j) over j
    return torch.softmax(logits / getattr(loss, 'temperature', 1.0), 0).reshape(h, w).numpy(), h * w


def _first_loss(distiller, type_names):
    for pair in distiller.pairs:
        for loss in pair.losses:
            while loss is not None:  # look inside wrappers (DAFADistillLoss, DAMDistillLoss)
                if type(loss).__name__ in type_names:
                    return pair, loss
                loss = getattr(loss, 'feature_loss', None)
    return None, None


def _pick_pixel(task: str, sample, h: int, w: int, img_hw):
    """A teacher-map pixel on an object: a digit stroke (seg), a box centre (det), the centre."""
    ih, iw = img_hw
    if task == 'seg':
        mask = sample['data_samples'].gt_sem_seg.data[0].numpy()
        ys, xs = np.nonzero(mask > 0)
        if len(ys):
            c = len(ys) // 2
            return int(ys[c] * h / ih), int(xs[c] * w / iw)
    if task == 'det':
        boxes = sample['data_samples'].gt_instances.bboxes
        boxes = getattr(boxes, 'tensor', boxes)
        if len(boxes):
            x1, y1, x2, y2 = boxes[0].tolist()
            return int((y1 + y2) / 2 * h / ih), int((x1 + x2) / 2 * w / iw)
    return h // 2, w // 2


def _overlay(img: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Blend a (h, w) heat map (nearest-upsampled, jet-like colours) over an RGB image."""
    plt = _plt()
    ih, iw = img.shape[:2]
    rows = np.minimum((np.arange(ih) * heat.shape[0] / ih).astype(int), heat.shape[0] - 1)
    cols = np.minimum((np.arange(iw) * heat.shape[1] / iw).astype(int), heat.shape[1] - 1)
    up = heat[rows][:, cols]
    up = up / up.max() if up.max() > 0 else up
    colour = plt.get_cmap('jet')(up)[..., :3] * 255
    return np.round(0.45 * img + 0.55 * colour).astype(np.uint8)


def attention_figure(distiller, task: str, samples, images):
    """Figure: the TaT attention of one object pixel per image over the student map.

    Args:
        distiller (BaseDistiller): A distiller with a ``TaTLoss`` / ``PatchGroupTaTLoss`` (or a
            loss holding one, e.g. ``HierarchicalTaTLoss``) on some tap.
        task (str): 'cls', 'seg' or 'det' (how the pixel is picked).
        samples (list[dict]): Processed val samples (see :func:`val_samples`).
        images (list[np.ndarray]): Their RGB images.

    Returns:
        matplotlib.figure.Figure | None: None when the distiller has no such loss.
    """
    pair, loss = _first_loss(distiller, ('TaTLoss', 'PatchGroupTaTLoss', 'HierarchicalTaTLoss'))
    if loss is None:
        return None
    plt = _plt()
    data = _preprocess(distiller, samples)
    feats = _features(distiller, data)
    s_all = feats['student'][pair.student_tap]
    t_all = feats['teacher'][pair.teacher_tap]
    fig, axes = plt.subplots(len(samples), 3, figsize=(9, 3 * len(samples)), squeeze=False)
    for b, (sample, img) in enumerate(zip(samples, images)):
        s, t = s_all[b:b + 1], t_all[b:b + 1]
        h, w = t.shape[-2:]
        y, x = _pick_pixel(task, sample, h, w, img.shape[:2])
        attn, num_keys = tat_attention_row(loss, s, t, y, x)
        sy, sx = img.shape[0] / h, img.shape[1] / w
        axes[b, 0].imshow(img)
        axes[b, 0].add_patch(plt.Rectangle((x * sx, y * sy), sx, sy, fill=False, ec='red', lw=2))
        axes[b, 0].set_title(f'image, teacher pixel ({y},{x}) of {h}x{w}', fontsize=8)
        im = axes[b, 1].imshow(attn, cmap='jet')
        axes[b, 1].plot([x], [y], 'w+', ms=10, mew=2)
        axes[b, 1].set_title(f'attention over student map\nmax {attn.max():.3f}, uniform '
                             f'{1 / num_keys:.3f}', fontsize=8)
        fig.colorbar(im, ax=axes[b, 1], fraction=0.046)
        axes[b, 2].imshow(_overlay(img, attn))
        axes[b, 2].set_title('overlaid on the image', fontsize=8)
        for ax in axes[b]:
            ax.axis('off')
    fig.suptitle(f'{task}: {type(loss).__name__} attention (tap {pair.student_tap}):\n'
                 'weights that rebuild the marked teacher pixel from the student positions',
                 fontsize=9)
    fig.tight_layout()
    return fig


def _save(fig, path: str) -> Optional[str]:
    if fig is None:
        return None
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path


def draw_attention(task: str, work_dir: str, out_dir: str, num_images: int = 3) -> Optional[str]:
    run = load_run(work_dir, task, 'tat')
    if run is None:
        return None
    distiller, cfg = build_model(run)
    samples, images = val_samples(cfg, task, list(range(num_images)))
    return _save(attention_figure(distiller, task, samples, images),
                 osp.join(out_dir, f'{task}_tat_attention.png'))


# ----------------------------------------------------------------------------- (b) DAM
def dam_figure(distiller, task: str, samples, images):
    """Figure: the areas DAM picks on the teacher and the student feature of each image.

    Args:
        distiller (BaseDistiller): A distiller with a ``DAMDistillLoss`` on some tap.
        task (str): 'cls', 'seg' or 'det'.
        samples (list[dict]): Processed val samples (see :func:`val_samples`).
        images (list[np.ndarray]): Their RGB images.

    Returns:
        matplotlib.figure.Figure | None: None when the distiller has no DAM loss.
    """
    import torch

    from .dam_vis import draw_dam_areas
    pair, loss = _first_loss(distiller, ('DAMDistillLoss', ))
    if loss is None:
        return None
    plt = _plt()
    data = _preprocess(distiller, samples)
    feats = _features(distiller, data)
    s = feats['student'][pair.student_tap]
    t = feats['teacher'][pair.teacher_tap].float()
    with torch.no_grad():
        if s.shape[-2:] != t.shape[-2:]:
            s = torch.nn.functional.interpolate(s, size=t.shape[-2:], mode='bilinear')
        areas_t = loss.dam.detect(t, k=loss.topk, kernel=loss.nms_kernel)
        areas_s = loss.dam.detect(loss.align(s.float()), k=loss.topk, kernel=loss.nms_kernel)
    fig, axes = plt.subplots(len(samples), 3, figsize=(9, 3 * len(samples)), squeeze=False)
    fh, fw = t.shape[-2:]
    for b, img in enumerate(images):
        axes[b, 0].imshow(img)
        axes[b, 0].set_title('image', fontsize=8)
        for col, (name, areas) in enumerate((('teacher', areas_t), ('student', areas_s)), 1):
            drawn = draw_dam_areas(img, boxes=areas['boxes'][b], mask=areas['mask'][b],
                                   feat_size=(fh, fw), thickness=2)
            axes[b, col].imshow(drawn)
            axes[b, col].set_title(f'DAM areas on the {name} feature (top-{loss.topk})',
                                   fontsize=8)
        for ax in axes[b]:
            ax.axis('off')
    fig.suptitle(f'{task}: areas SoKD\'s DAM picked (tap {pair.student_tap}, {fh}x{fw}); mask '
                 f'used for distillation: {loss.area_source}', fontsize=9)
    fig.tight_layout()
    return fig


def draw_dam(task: str, work_dir: str, out_dir: str, num_images: int = 3) -> Optional[str]:
    run = load_run(work_dir, task, 'tat_dam')
    if run is None:
        return None
    distiller, cfg = build_model(run)
    samples, images = val_samples(cfg, task, list(range(num_images)))
    return _save(dam_figure(distiller, task, samples, images),
                 osp.join(out_dir, f'{task}_dam_areas.png'))


# ----------------------------------------------------------------------------- (c) predictions
def _predict(model, samples):
    import torch
    data = _preprocess(model, samples)
    with torch.no_grad():
        return model(data['inputs'], data['data_samples'], mode='predict')


def _colour_mask(mask: np.ndarray, palette) -> np.ndarray:
    palette = np.asarray(palette, np.uint8)
    return palette[np.clip(mask, 0, len(palette) - 1)]


def draw_predictions(task: str, work_dir: str, out_dir: str, num_images: int = 4,
                     score_thr: float = 0.3) -> Optional[str]:
    from tat_mm.datasets.digits import DIGIT_PALETTE, SEG_PALETTE
    runs = [(m, load_run(work_dir, task, m)) for m in ('teacher', 'student', 'tat')]
    runs = [(m, r) for m, r in runs if r is not None]
    if not runs:
        return None
    plt = _plt()
    cfg = _cfg(runs[0][1])
    samples, images = val_samples(cfg, task, list(range(num_images)))
    cols = len(runs) + 1
    fig, axes = plt.subplots(len(samples), cols, figsize=(2.6 * cols, 2.6 * len(samples)),
                             squeeze=False)
    for b, img in enumerate(images):
        ds = samples[b]['data_samples']
        if task == 'seg':
            gt = ds.gt_sem_seg.data[0].numpy()
            axes[b, 0].imshow(np.round(0.5 * img + 0.5 * _colour_mask(gt, SEG_PALETTE))
                              .astype(np.uint8))
            axes[b, 0].set_title('ground truth', fontsize=8)
        elif task == 'cls':
            axes[b, 0].imshow(img)
            axes[b, 0].set_title(f'image, label {int(ds.gt_label[0])}', fontsize=8)
        else:
            axes[b, 0].imshow(img)
            _boxes(axes[b, 0], ds.gt_instances.bboxes, ds.gt_instances.labels, None, DIGIT_PALETTE)
            axes[b, 0].set_title('ground truth', fontsize=8)
    for col, (method, run) in enumerate(runs, 1):
        model, _ = build_model(run)
        preds = _predict(model, samples)
        for b, (img, pred) in enumerate(zip(images, preds)):
            ax = axes[b, col]
            if task == 'seg':
                mask = pred.pred_sem_seg.data[0].numpy()
                ax.imshow(np.round(0.5 * img + 0.5 * _colour_mask(mask, SEG_PALETTE))
                          .astype(np.uint8))
            elif task == 'cls':
                ax.imshow(img)
                label = int(pred.pred_label[0])
                ok = label == int(samples[b]['data_samples'].gt_label[0])
                ax.text(1, 4, f'pred {label} ({float(pred.pred_score.max()):.2f})',
                        color='lime' if ok else 'red', fontsize=9, weight='bold')
            else:
                ax.imshow(img)
                inst = pred.pred_instances
                keep = inst.scores > score_thr
                _boxes(ax, inst.bboxes[keep], inst.labels[keep], inst.scores[keep], DIGIT_PALETTE)
            if b == 0:
                ax.set_title(METHOD_LABELS[method], fontsize=8)
        del model
    for ax in axes.ravel():
        ax.axis('off')
    extra = f' (boxes with score > {score_thr})' if task == 'det' else ''
    fig.suptitle(f'{task}: predictions on the same validation images{extra}', fontsize=9)
    fig.tight_layout()
    path = osp.join(out_dir, f'{task}_predictions.png')
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _boxes(ax, boxes, labels, scores, palette):
    plt = _plt()
    boxes = getattr(boxes, 'tensor', boxes)
    for i, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
        x1, y1, x2, y2 = box
        colour = np.asarray(palette[int(label) % len(palette)]) / 255
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, lw=1.5))
        text = str(int(label)) if scores is None else f'{int(label)} {float(scores[i]):.2f}'
        ax.text(x1, y1 - 1, text, color=colour, fontsize=7, weight='bold')


# ----------------------------------------------------------------------------- (d) losses
def read_scalars(log_dir: str, search_dir: Optional[str] = None) -> List[dict]:
    """The scalar log of one run: MMEngine's ``vis_data/<timestamp>.json`` (only this run's lines;
    ``scalars.json`` appends the runs of a work dir), else ``scalars.json``. Runs of an older demo
    that shared mmseg's / mmdet's named visualizer wrote it into another run's ``vis_data``:
    ``search_dir`` is then searched for ``<timestamp>.json``."""
    import glob
    stamp = osp.basename(osp.normpath(log_dir))
    candidates = [osp.join(log_dir, 'vis_data', f'{stamp}.json'),
                  osp.join(log_dir, 'vis_data', 'scalars.json')]
    if search_dir:
        candidates += sorted(glob.glob(osp.join(search_dir, '**', 'vis_data', f'{stamp}.json'),
                                       recursive=True))
    path = next((c for c in candidates if osp.isfile(c)), None)
    if path is None:
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def draw_loss_curves(task: str, work_dir: str, out_dir: str) -> Optional[str]:
    plt = _plt()
    runs = [(m, load_run(work_dir, task, m)) for m in ('teacher', 'student', 'tat', 'tat_dam',
                                                       'fitnet')]
    runs = [(m, r) for m, r in runs if r is not None]
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, run in runs:
        rows = [r for r in read_scalars(run['log_dir'], osp.join(work_dir, task)) if 'loss' in r and 'step' in r]
        if not rows:
            continue
        steps = [r['step'] for r in rows]
        task_loss = [r['loss'] - sum(v for k, v in r.items()
                                     if k.startswith('loss_') and '.' in k) for r in rows]
        axes[0].plot(steps, task_loss, label=METHOD_LABELS[method], marker='.')
        keys = sorted({k for r in rows for k in r if k.startswith('loss_') and '.' in k})
        for key in keys:
            axes[1].plot(steps, [r.get(key, np.nan) for r in rows], marker='.',
                         label=f'{method}: {key}')
    axes[0].set_title('task loss (total minus distillation terms), seed 0', fontsize=9)
    axes[1].set_title('distillation terms (weighted), seed 0', fontsize=9)
    for ax in axes:
        ax.set_xlabel('iteration')
        ax.set_yscale('log')
        if ax.lines:
            ax.legend(fontsize=6)
    fig.suptitle(f'{task}: training losses (from vis_data/scalars.json)', fontsize=9)
    fig.tight_layout()
    path = osp.join(out_dir, f'{task}_loss_curves.png')
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def make_task_figures(task: str, work_dir: str, out_dir: Optional[str] = None) -> List[str]:
    """Draw (a)-(d) for one task of a demo work dir; returns the PNG paths written."""
    out_dir = out_dir or osp.join(work_dir, 'figures')
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for fn in (draw_attention, draw_dam, draw_predictions, draw_loss_curves):
        path = fn(task, work_dir, out_dir)
        if path is not None:
            paths.append(path)
    return paths
