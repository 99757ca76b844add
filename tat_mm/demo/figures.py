"""Figures of the demo (``tools/demo.py``, ``tools/visualize.py``): numpy + matplotlib.

Not part of the installed core: ``import tat_mm`` does not import this module.

Reads the runs ``tools/demo.py`` wrote (``<work_dir>/<task>/<method>/seed<k>/demo_run.json``: the
config, its overrides, the final checkpoint and the log dir) and draws, per task:

(a) ``<task>_tat_attention.png``: the TaT attention of a chosen teacher pixel over the student map,
    from the trained TaT loss of the ``tat`` run (see
    :func:`tat_mm.visualization.distill_figures.attention_figure`, which says which row is drawn).
(b) ``<task>_dam_areas.png``: the areas DAM picks on the teacher and the student feature, from the
    trained ``DAMDistillLoss`` of the ``tat_dam`` run
    (:func:`tat_mm.visualization.distill_figures.dam_figure`).
(c) ``<task>_predictions.png``: teacher, student alone and TaT-distilled student on the same
    validation images (masks in the dataset palette; boxes with label and score; predicted labels).
(d) ``<task>_loss_curves.png``: training losses per method (seed 0) from MMEngine's
    ``vis_data/scalars.json``.
"""
import json
import os
import os.path as osp
from typing import List, Optional

import numpy as np

from ..visualization.distill_figures import attention_figure, dam_figure
from ..visualization.distill_figures import preprocess_samples as _preprocess
from ..visualization.distill_figures import pyplot as _plt
from ..visualization.distill_figures import tapped_features as _features  # noqa: F401 (tools/evidence.py)

SCOPES = {'cls': 'mmpretrain', 'seg': 'mmseg', 'det': 'mmdet'}
METHOD_LABELS = {'teacher': 'teacher', 'student': 'student alone', 'tat': 'student + TaT',
                 'tat_dam': 'student + TaT + DAM', 'fitnet': 'student + FitNet'}


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


# ----------------------------------------------------------------------------- (a), (b)
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
