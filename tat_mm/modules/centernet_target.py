"""Optional ground-truth supervision of DAM, CenterNet-style (for detection).

Boxes are given in feature-map coordinates with the convention of
:mod:`tat_mm.modules.area_extraction`: cell ``(i, j)`` is ``[j, j + 1) x [i, i + 1)``. A box with
centre ``(cx, cy)`` is assigned to the cell containing its centre, ``(floor(cy), floor(cx))``
(clamped to the map); its targets are

* heatmap: a Gaussian peak (value exactly 1 at that cell) in channel ``label``, radius from
  CenterNet's ``gaussian_radius`` (min IoU 0.7), ``sigma = (2r + 1) / 6``, truncated to the
  ``(2r + 1) x (2r + 1)`` window; overlapping peaks of one class take the maximum;
* size: ``(x2 - x1, y2 - y1)``; offset: the centre minus the cell centre, in ``[-0.5, 0.5)``.

Loss (:func:`centernet_loss`): CenterNet's Gaussian focal loss on the heatmap (alpha 2, gamma 4,
normalised by the number of cells where the target is 1) plus L1 on size and offset read at the
centre cells (normalised by the number of boxes), weights 1, 0.1 and 1 as in CenterNet.
"""
from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor


def gaussian_radius(height: Tensor, width: Tensor, min_overlap: float = 0.7) -> Tensor:
    """CenterNet / CornerNet Gaussian radius for boxes of the given size (element-wise).

    Args:
        height (Tensor): Box heights.
        width (Tensor): Box widths.
        min_overlap (float): Minimum IoU a corner-shifted box must keep. Defaults to 0.7.

    Returns:
        Tensor: Radii (float, >= 0, not rounded).
    """
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 - torch.sqrt(b1**2 - 4 * a1 * c1)) / (2 * a1)
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 - torch.sqrt(b2**2 - 4 * a2 * c2)) / (2 * a2)
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / (2 * a3)
    return torch.minimum(torch.minimum(r1, r2), r3).clamp(min=0)


@torch.no_grad()
def centernet_targets(gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor], num_classes: int,
                      feat_size: Tuple[int, int], min_overlap: float = 0.7) -> Dict[str, Tensor]:
    """Heatmap / size / offset targets for a batch, all boxes at once (no loop over boxes).

    Args:
        gt_boxes (Sequence[Tensor]): Per image, (N_i, 4) boxes ``(x1, y1, x2, y2)`` in feature-map
            coordinates.
        gt_labels (Sequence[Tensor]): Per image, (N_i,) class indices in ``[0, num_classes)``.
        num_classes (int): Heatmap channels K.
        feat_size (tuple[int, int]): (H, W) of the map.
        min_overlap (float): See :func:`gaussian_radius`. Defaults to 0.7.

    Returns:
        dict[str, Tensor]: ``heatmap`` (B, K, H, W); per box (N = sum N_i): ``batch``, ``rows``,
        ``cols`` (N,) long centre cells, ``size`` (N, 2) and ``offset`` (N, 2).
    """
    if len(gt_boxes) != len(gt_labels):
        raise ValueError(f'{len(gt_boxes)} box tensors but {len(gt_labels)} label tensors')
    h, w = feat_size
    device = gt_boxes[0].device if len(gt_boxes) else torch.device('cpu')
    for i, (b, l) in enumerate(zip(gt_boxes, gt_labels)):
        if b.dim() != 2 or b.shape[-1] != 4 or l.dim() != 1 or l.shape[0] != b.shape[0]:
            raise ValueError(f'image {i}: boxes must be (N, 4) and labels (N,), got '
                             f'{tuple(b.shape)} and {tuple(l.shape)}')
        if l.numel() and (l.min() < 0 or l.max() >= num_classes):
            raise ValueError(f'image {i}: labels must be in [0, {num_classes}), got {l.tolist()}')
    boxes = torch.cat([b.float().reshape(-1, 4) for b in gt_boxes]).to(device)
    labels = torch.cat([l.long().reshape(-1) for l in gt_labels]).to(device)
    batch = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=device)
                       for i, b in enumerate(gt_boxes)])

    bw = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    bh = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    cols = cx.floor().clamp(0, w - 1).long()
    rows = cy.floor().clamp(0, h - 1).long()
    radius = gaussian_radius(bh, bw, min_overlap).floor()
    sigma = (2 * radius + 1) / 6

    # One Gaussian per box over the whole map, (N, H, W), then a per-(image, class) maximum.
    dy = torch.arange(h, device=device).view(1, h, 1) - rows.view(-1, 1, 1)
    dx = torch.arange(w, device=device).view(1, 1, w) - cols.view(-1, 1, 1)
    r = radius.view(-1, 1, 1)
    gauss = torch.exp(-(dx**2 + dy**2) / (2 * sigma.view(-1, 1, 1)**2))
    gauss = gauss * ((dx.abs() <= r) & (dy.abs() <= r))
    heatmap = torch.zeros(len(gt_boxes) * num_classes, h * w, device=device)
    index = (batch * num_classes + labels).view(-1, 1).expand(-1, h * w)
    heatmap.scatter_reduce_(0, index, gauss.flatten(1), 'amax')
    heatmap = heatmap.view(len(gt_boxes), num_classes, h, w)
    offset = torch.stack([cx - (cols + 0.5), cy - (rows + 0.5)], -1)
    return dict(heatmap=heatmap, batch=batch, rows=rows, cols=cols,
                size=torch.stack([bw, bh], -1), offset=offset)


def gaussian_focal_loss(pred: Tensor, target: Tensor, alpha: float = 2.0, gamma: float = 4.0,
                        eps: float = 1e-6) -> Tensor:
    """CenterNet's focal loss for Gaussian heatmaps, summed and divided by the number of peaks.

    Args:
        pred (Tensor): Predicted probabilities in (0, 1).
        target (Tensor): Gaussian target, same shape, 1 at the peaks.
        alpha (float): Focusing power on the prediction. Defaults to 2.0.
        gamma (float): Power on ``1 - target`` that lowers the penalty near peaks. Defaults to 4.0.
        eps (float): Clamp for the logs. Defaults to 1e-6.

    Returns:
        Tensor: Scalar loss.
    """
    pred = pred.clamp(eps, 1 - eps)
    pos = target.eq(1)
    pos_loss = -pred.log() * (1 - pred).pow(alpha) * pos
    neg_loss = -(1 - pred).log() * pred.pow(alpha) * (1 - target).pow(gamma) * ~pos
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def centernet_loss(pred: Dict[str, Tensor], targets: Dict[str, Tensor], heatmap_weight: float = 1.0,
                   size_weight: float = 0.1, offset_weight: float = 1.0) -> Dict[str, Tensor]:
    """CenterNet loss of DAM outputs against :func:`centernet_targets`.

    Args:
        pred (dict[str, Tensor]): DAM output: ``heatmap`` (B, K, H, W) probabilities, ``size`` and
            ``offset`` (B, 2, H, W).
        targets (dict[str, Tensor]): Output of :func:`centernet_targets`.
        heatmap_weight (float): Weight of the focal loss. Defaults to 1.0.
        size_weight (float): Weight of the size L1. Defaults to 0.1.
        offset_weight (float): Weight of the offset L1. Defaults to 1.0.

    Returns:
        dict[str, Tensor]: ``loss_heatmap``, ``loss_size``, ``loss_offset`` (weighted scalars).
    """
    if pred['heatmap'].shape != targets['heatmap'].shape:
        raise ValueError(f"heatmap {tuple(pred['heatmap'].shape)} does not match its target "
                         f"{tuple(targets['heatmap'].shape)}")
    b, rows, cols = targets['batch'], targets['rows'], targets['cols']
    num = max(len(b), 1)
    # (B, 2, H, W) -> (N, 2) at the centre cells.
    size = pred['size'].permute(0, 2, 3, 1)[b, rows, cols]
    offset = pred['offset'].permute(0, 2, 3, 1)[b, rows, cols]
    return dict(
        loss_heatmap=heatmap_weight * gaussian_focal_loss(pred['heatmap'], targets['heatmap']),
        loss_size=size_weight * (size - targets['size']).abs().sum() / num,
        loss_offset=offset_weight * (offset - targets['offset']).abs().sum() / num)
