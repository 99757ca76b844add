"""Draw DAM areas (boxes and / or mask) over an image or a feature map, with numpy only.

Boxes are in feature-map coordinates (see :mod:`tat_mm.modules.area_extraction`: the map covers
``[0, W] x [0, H]``); they are scaled by ``output_size / feature_size`` per axis, so on an image
they land where the feature cells are.
"""
from typing import Optional, Sequence, Tuple, Union

import numpy as np

ArrayLike = Union[np.ndarray, 'torch.Tensor']  # noqa: F821


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, 'detach'):  # torch.Tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _feature_to_rgb(feat: np.ndarray, scale: int) -> np.ndarray:
    """(C, H, W) or (H, W) -> (H * scale, W * scale, 3) uint8 of the min-max normalised mean."""
    fmap = feat.astype(np.float64)
    if fmap.ndim == 3:
        fmap = fmap.mean(0)
    lo, hi = np.nanmin(fmap), np.nanmax(fmap)
    fmap = (fmap - lo) / (hi - lo) if hi > lo else np.zeros_like(fmap)
    gray = np.round(np.nan_to_num(fmap) * 255).astype(np.uint8)
    gray = np.repeat(np.repeat(gray, scale, 0), scale, 1)
    return np.stack([gray] * 3, -1)


def draw_dam_areas(image_or_feature: ArrayLike,
                   boxes: Optional[ArrayLike] = None,
                   mask: Optional[ArrayLike] = None,
                   feat_size: Optional[Tuple[int, int]] = None,
                   is_feature: Optional[bool] = None,
                   feature_scale: Optional[int] = None,
                   box_color: Sequence[int] = (255, 0, 0),
                   mask_color: Sequence[int] = (0, 255, 0),
                   mask_alpha: float = 0.4,
                   thickness: int = 1) -> np.ndarray:
    """Draw areas over an image or a feature map.

    Args:
        image_or_feature (np.ndarray | Tensor): An (H, W, 3) image (uint8, or float in [0, 1]), or
            a (C, H, W) / (H, W) feature map (drawn as its channel mean, min-max normalised and
            enlarged by ``feature_scale``).
        boxes (np.ndarray | Tensor, optional): (N, 4) ``(x1, y1, x2, y2)`` in feature coordinates.
            Defaults to None.
        mask (np.ndarray | Tensor, optional): Feature-size mask, (h, w) with optional leading
            singleton dims; blended in ``mask_color`` with opacity ``mask_alpha * mask / max``.
            Defaults to None.
        feat_size (tuple[int, int], optional): (h, w) of the feature map the boxes refer to. For an
            image, needed unless ``mask`` gives it. Defaults to None.
        is_feature (bool, optional): Force the input kind. Defaults to None (a tensor or an array
            that is not (H, W, 3) is a feature).
        feature_scale (int, optional): Integer enlargement of a feature map. Defaults to None
            (``max(1, 256 // max(h, w))``).
        box_color (Sequence[int]): RGB of the box outlines. Defaults to (255, 0, 0).
        mask_color (Sequence[int]): RGB of the mask overlay. Defaults to (0, 255, 0).
        mask_alpha (float): Opacity of the mask where it is largest. Defaults to 0.4.
        thickness (int): Box outline width in output pixels (drawn inwards). Defaults to 1.

    Returns:
        np.ndarray: (H_out, W_out, 3) uint8 drawing (a new array).
    """
    was_tensor = hasattr(image_or_feature, 'detach')
    data = _to_numpy(image_or_feature)
    if is_feature is None:
        is_feature = was_tensor or not (data.ndim == 3 and data.shape[-1] == 3)
    if mask is not None:
        mask = _to_numpy(mask).astype(np.float64)
        mask = mask.reshape(mask.shape[-2:]) if mask.ndim > 2 else mask
        if mask.ndim != 2:
            raise ValueError(f'mask must be (h, w) with optional leading 1s, got {mask.shape}')

    if is_feature:
        if data.ndim not in (2, 3):
            raise ValueError(f'a feature map must be (C, H, W) or (H, W), got {data.shape}')
        fh, fw = data.shape[-2:]
        if feat_size is not None and tuple(feat_size) != (fh, fw):
            raise ValueError(f'feat_size {tuple(feat_size)} differs from the feature {(fh, fw)}')
        scale = feature_scale or max(1, 256 // max(fh, fw))
        canvas = _feature_to_rgb(data, scale)
    else:
        if data.ndim != 3 or data.shape[-1] != 3:
            raise ValueError(f'an image must be (H, W, 3), got {data.shape}')
        if feat_size is None:
            if mask is None:
                raise ValueError('feat_size (or a mask) is needed to place boxes on an image')
            feat_size = mask.shape
        fh, fw = feat_size
        canvas = data
        if canvas.dtype != np.uint8:
            canvas = canvas.astype(np.float64)
            canvas = canvas * 255 if canvas.max() <= 1.0 else canvas
            canvas = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
        canvas = canvas.copy()
    out_h, out_w = canvas.shape[:2]

    if mask is not None:
        if mask.shape != (fh, fw):
            raise ValueError(f'mask {mask.shape} does not match the feature size {(fh, fw)}')
        # Nearest upsampling: output pixel centre -> feature cell.
        rows = np.minimum(((np.arange(out_h) + 0.5) * fh / out_h).astype(int), fh - 1)
        cols = np.minimum(((np.arange(out_w) + 0.5) * fw / out_w).astype(int), fw - 1)
        m = mask[rows][:, cols]
        m = m / m.max() if m.max() > 0 else m
        a = (mask_alpha * m)[..., None]
        canvas = np.round(canvas * (1 - a) + np.asarray(mask_color, np.float64) * a)
        canvas = canvas.astype(np.uint8)

    if boxes is not None:
        boxes = _to_numpy(boxes).astype(np.float64).reshape(-1, 4)
        sx, sy = out_w / fw, out_h / fh
        for x1, y1, x2, y2 in boxes:  # a handful of boxes: a loop is clearest
            c1 = int(np.clip(np.floor(x1 * sx), 0, out_w - 1))
            r1 = int(np.clip(np.floor(y1 * sy), 0, out_h - 1))
            c2 = int(np.clip(np.ceil(x2 * sx) - 1, c1, out_w - 1))
            r2 = int(np.clip(np.ceil(y2 * sy) - 1, r1, out_h - 1))
            t = max(1, thickness)
            color = np.asarray(box_color, np.uint8)
            canvas[r1:min(r1 + t, r2 + 1), c1:c2 + 1] = color
            canvas[max(r2 - t + 1, r1):r2 + 1, c1:c2 + 1] = color
            canvas[r1:r2 + 1, c1:min(c1 + t, c2 + 1)] = color
            canvas[r1:r2 + 1, max(c2 - t + 1, c1):c2 + 1] = color
    return canvas
