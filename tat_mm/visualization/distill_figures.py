"""The figures :class:`~tat_mm.visualization.DistillVisualizationHook` draws during training.

(a) :func:`attention_figure`: the TaT attention of a chosen teacher pixel over the student map,
    from a trained TaT loss (its learned gamma / theta embeddings). In Eq. 7,
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
(b) :func:`dam_figure`: the areas DAM picks on the teacher and the student feature, from a trained
    ``DAMDistillLoss`` (``DAM.detect``, drawn by :func:`~tat_mm.visualization.draw_dam_areas`).

The demo's own figures (predictions, loss curves, figures from saved runs) are in
:mod:`tat_mm.demo.figures`, which ``import tat_mm`` does not import.
"""
from typing import Dict

import numpy as np


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def preprocess_samples(model, samples):
    """A batch of processed samples through ``model``'s data preprocessor (no augmentation)."""
    from mmengine.dataset import pseudo_collate
    return model.data_preprocessor(pseudo_collate(samples), False)


def tapped_features(distiller, data) -> Dict[str, Dict]:
    """Student and teacher tapped features of a batch."""
    student, teacher = distiller.tapped_features(data['inputs'], data['data_samples'])
    return dict(student=student, teacher=teacher)


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
    plt = pyplot()
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
        samples (list[dict]): Processed val samples (the val pipeline applied).
        images (list[np.ndarray]): Their RGB images.

    Returns:
        matplotlib.figure.Figure | None: None when the distiller has no such loss.
    """
    pair, loss = _first_loss(distiller, ('TaTLoss', 'PatchGroupTaTLoss', 'HierarchicalTaTLoss'))
    if loss is None:
        return None
    plt = pyplot()
    data = preprocess_samples(distiller, samples)
    feats = tapped_features(distiller, data)
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


def dam_figure(distiller, task: str, samples, images):
    """Figure: the areas DAM picks on the teacher and the student feature of each image.

    Args:
        distiller (BaseDistiller): A distiller with a ``DAMDistillLoss`` on some tap.
        task (str): 'cls', 'seg' or 'det'.
        samples (list[dict]): Processed val samples (the val pipeline applied).
        images (list[np.ndarray]): Their RGB images.

    Returns:
        matplotlib.figure.Figure | None: None when the distiller has no DAM loss.
    """
    import torch

    from .dam_vis import draw_dam_areas
    pair, loss = _first_loss(distiller, ('DAMDistillLoss', ))
    if loss is None:
        return None
    plt = pyplot()
    data = preprocess_samples(distiller, samples)
    feats = tapped_features(distiller, data)
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
