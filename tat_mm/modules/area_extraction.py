"""Distinctive areas from a CenterNet-style heatmap / size / offset prediction (SoKD's DAM).

Pure, batched functions: peak finding (3x3 max-pool NMS), top-k peaks over classes and positions,
peak -> box decoding and box -> spatial mask rasterisation. Nothing here loops over images or boxes
in Python, and nothing returns a tensor that carries gradient.

Coordinate convention (shared with :mod:`tat_mm.modules.centernet_target` and
:mod:`tat_mm.visualization.dam_vis`):

* A feature map of size (H, W) covers the continuous rectangle ``[0, W] x [0, H]``; cell
  ``(row i, col j)`` is the unit square ``[j, j + 1) x [i, i + 1)`` and its centre is
  ``(j + 0.5, i + 0.5)``. Image coordinates are feature coordinates times the stride
  (``image_width / W``).
* A peak at cell ``(i, j)`` with offset ``(ox, oy)`` and size ``(w, h)`` has the centre
  ``(cx, cy) = (j + 0.5 + ox, i + 0.5 + oy)`` (the offset is measured from the cell *centre*, so a
  zero offset means "centred on the peak cell") and the box
  ``(x1, y1, x2, y2) = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)``, clamped to
  ``[0, W] x [0, H]``. Negative sizes are treated as 0.
* A box covers a cell when the cell overlaps the box with positive area (``j < x2`` and
  ``j + 1 > x1``, likewise for rows), and every box also covers the cell that contains its clamped
  centre, so a zero-size box covers exactly one cell. Covered cells are returned as inclusive
  integer ranges ``(col1, row1, col2, row2)``. Examples on one axis: centre 3.5 (offset 0 at cell
  3) with width 1 -> cells 3..3; width 3 -> cells 2..4; width 2 -> cells 2..4 (partly covered
  cells count); width 0 -> cell 3.
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

MASK_MODES = ('binary', 'sum', 'score')


def _check_map(name: str, x: Tensor, channels: Optional[int] = None) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f'{name} must be a (B, C, H, W) tensor, got '
                         f'{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}')
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f'{name} must have {channels} channels, got shape {tuple(x.shape)}')


def local_maximum_mask(heatmap: Tensor, kernel: int = 3) -> Tensor:
    """Cells that equal the maximum of their ``kernel x kernel`` neighbourhood (per class).

    Every cell of a plateau of equal maxima is kept; top-k then orders them deterministically.

    Args:
        heatmap (Tensor): (B, K, H, W) scores.
        kernel (int): Odd max-pool window. Defaults to 3.

    Returns:
        Tensor: (B, K, H, W) bool, True at local maxima.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f'kernel must be a positive odd integer, got {kernel}')
    _check_map('heatmap', heatmap)
    hmax = F.max_pool2d(heatmap, kernel, stride=1, padding=(kernel - 1) // 2)
    return hmax == heatmap


@torch.no_grad()
def topk_peaks(heatmap: Tensor,
               k: int,
               kernel: int = 3,
               score_thr: Optional[float] = None) -> Dict[str, Tensor]:
    """Top-k local maxima over all classes and positions of each image.

    ``k`` larger than ``K * H * W`` is clamped to ``K * H * W`` (so one setting works on every FPN
    level). When fewer than ``k`` local maxima exist, the remaining entries are marked invalid
    (``valid`` False, ``scores`` -inf) instead of picking suppressed cells. Ties are broken
    deterministically by the flat index ``(class, row, col)``: lower class, then lower row, then
    lower column first.

    Args:
        heatmap (Tensor): (B, K, H, W) scores (DAM gives sigmoid probabilities).
        k (int): Number of peaks per image, >= 1.
        kernel (int): Max-pool NMS window. Defaults to 3.
        score_thr (float, optional): Peaks with a score <= this are invalid. Defaults to None.

    Returns:
        dict[str, Tensor]: ``scores`` (B, k') float, ``labels``, ``rows``, ``cols`` (B, k') long and
        ``valid`` (B, k') bool, with ``k' = min(k, K * H * W)``, best first.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f'k must be an integer >= 1, got {k!r}')
    keep = local_maximum_mask(heatmap, kernel)
    b, num_classes, h, w = heatmap.shape
    scores = heatmap.detach().float().masked_fill(~keep, float('-inf')).flatten(1)
    k = min(k, scores.shape[1])
    # A stable sort (not topk) so that ties always come out in flat-index order.
    scores, index = torch.sort(scores, dim=1, descending=True, stable=True)
    scores, index = scores[:, :k], index[:, :k]
    valid = torch.isfinite(scores)
    if score_thr is not None:
        valid &= scores > score_thr
    pos = index % (h * w)
    return dict(scores=scores, labels=index // (h * w), rows=pos // w, cols=pos % w, valid=valid)


def _gather_at(pred: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """(B, C, H, W) values at (B, k) cells -> (B, k, C)."""
    b, c, h, w = pred.shape
    index = (rows * w + cols).unsqueeze(1).expand(b, c, rows.shape[1])
    return pred.flatten(2).gather(2, index).transpose(1, 2)


@torch.no_grad()
def decode_boxes(rows: Tensor, cols: Tensor, size: Tensor,
                 offset: Tensor) -> Tuple[Tensor, Tensor]:
    """Boxes of peaks, in feature-map coordinates (see the module docstring).

    Args:
        rows (Tensor): (B, k) peak rows.
        cols (Tensor): (B, k) peak columns.
        size (Tensor): (B, 2, H, W) predicted (w, h) in cells.
        offset (Tensor): (B, 2, H, W) predicted (x, y) offset from the cell centre, in cells.

    Returns:
        tuple[Tensor, Tensor]: ``boxes`` (B, k, 4) float ``(x1, y1, x2, y2)`` clamped to the map,
        and ``cells`` (B, k, 4) long inclusive covered cell ranges ``(col1, row1, col2, row2)``.
    """
    _check_map('size', size, 2)
    _check_map('offset', offset, 2)
    if size.shape != offset.shape:
        raise ValueError(f'size {tuple(size.shape)} and offset {tuple(offset.shape)} differ')
    h, w = size.shape[-2:]
    wh = _gather_at(size.detach().float(), rows, cols).clamp(min=0)
    off = _gather_at(offset.detach().float(), rows, cols)
    cx = cols.float() + 0.5 + off[..., 0]
    cy = rows.float() + 0.5 + off[..., 1]
    boxes = torch.stack([(cx - wh[..., 0] / 2).clamp(0, w), (cy - wh[..., 1] / 2).clamp(0, h),
                         (cx + wh[..., 0] / 2).clamp(0, w), (cy + wh[..., 1] / 2).clamp(0, h)], -1)
    # Cell containing the (clamped) centre: always covered, so tiny boxes are never empty.
    ccol = cx.floor().clamp(0, w - 1).long()
    crow = cy.floor().clamp(0, h - 1).long()
    # Cells overlapping [x1, x2] with positive length: floor(x1) .. ceil(x2) - 1.
    cells = torch.stack([
        torch.minimum(boxes[..., 0].floor().long(), ccol),
        torch.minimum(boxes[..., 1].floor().long(), crow),
        torch.maximum(boxes[..., 2].ceil().long() - 1, ccol),
        torch.maximum(boxes[..., 3].ceil().long() - 1, crow),
    ], -1)
    return boxes, cells


@torch.no_grad()
def cells_to_mask(cells: Tensor,
                  feat_size: Tuple[int, int],
                  valid: Optional[Tensor] = None,
                  scores: Optional[Tensor] = None,
                  mode: str = 'binary') -> Tensor:
    """Rasterise inclusive cell boxes into a (B, 1, H, W) mask by broadcast comparisons.

    Args:
        cells (Tensor): (B, k, 4) long ``(col1, row1, col2, row2)``, inclusive.
        feat_size (tuple[int, int]): (H, W) of the map.
        valid (Tensor, optional): (B, k) bool; invalid boxes cover nothing. Defaults to None (all
            valid).
        scores (Tensor, optional): (B, k) box scores, needed for ``mode='score'``. Defaults to None.
        mode (str): ``'binary'``: 1 inside the union of the boxes, else 0. ``'sum'``: number of
            boxes covering the cell. ``'score'``: highest score among the boxes covering the cell
            (0 where none; scores are assumed >= 0, e.g. sigmoid). Defaults to 'binary'.

    Returns:
        Tensor: (B, 1, H, W) float32 mask, without gradient.
    """
    if mode not in MASK_MODES:
        raise ValueError(f'mode must be one of {MASK_MODES}, got {mode!r}')
    if cells.dim() != 3 or cells.shape[-1] != 4:
        raise ValueError(f'cells must be (B, k, 4), got {tuple(cells.shape)}')
    h, w = feat_size
    rows = torch.arange(h, device=cells.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=cells.device).view(1, 1, 1, w)
    c = cells[..., None, None]  # (B, k, 4, 1, 1) -> each coordinate (B, k, 1, 1)
    cover = ((cols >= c[:, :, 0]) & (cols <= c[:, :, 2]) &
             (rows >= c[:, :, 1]) & (rows <= c[:, :, 3]))  # (B, k, H, W)
    if valid is not None:
        cover &= valid[..., None, None]
    if mode == 'binary':
        mask = cover.any(1, keepdim=True).float()
    elif mode == 'sum':
        mask = cover.sum(1, keepdim=True).float()
    else:
        if scores is None:
            raise ValueError("mode='score' needs scores")
        s = scores.detach().float()[..., None, None]
        mask = torch.where(cover, s, torch.zeros_like(s)).amax(1, keepdim=True).clamp(min=0)
    return mask


@torch.no_grad()
def extract_areas(heatmap: Tensor,
                  size: Tensor,
                  offset: Tensor,
                  k: int = 8,
                  kernel: int = 3,
                  mode: str = 'binary',
                  score_thr: Optional[float] = None) -> Dict[str, Tensor]:
    """Peaks -> boxes -> mask in one call (what DAM distillation uses).

    Args:
        heatmap (Tensor): (B, K, H, W) scores.
        size (Tensor): (B, 2, H, W) (w, h) in cells.
        offset (Tensor): (B, 2, H, W) (x, y) offset from the cell centre.
        k (int): Peaks per image, clamped to ``K * H * W``. Defaults to 8.
        kernel (int): Max-pool NMS window. Defaults to 3.
        mode (str): Mask mode, see :func:`cells_to_mask`. Defaults to 'binary'.
        score_thr (float, optional): Drop peaks scoring <= this. Defaults to None.

    Returns:
        dict[str, Tensor]: ``mask`` (B, 1, H, W), ``boxes`` (B, k', 4), ``cells`` (B, k', 4) and
        the entries of :func:`topk_peaks`. Nothing carries gradient.
    """
    _check_map('heatmap', heatmap)
    if heatmap.shape[1] < 1:
        raise ValueError('heatmap needs at least one class channel')
    for name, x in (('size', size), ('offset', offset)):
        _check_map(name, x, 2)
        if x.shape[0] != heatmap.shape[0] or x.shape[-2:] != heatmap.shape[-2:]:
            raise ValueError(f'{name} {tuple(x.shape)} does not match heatmap '
                             f'{tuple(heatmap.shape)} in batch or spatial size')
    peaks = topk_peaks(heatmap, k, kernel, score_thr)
    boxes, cells = decode_boxes(peaks['rows'], peaks['cols'], size, offset)
    mask = cells_to_mask(cells, heatmap.shape[-2:], peaks['valid'], peaks['scores'], mode)
    return dict(mask=mask, boxes=boxes, cells=cells, **peaks)
