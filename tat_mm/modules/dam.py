"""DAM: SoKD's Distinctive Area Detection Module (CenterNet-style heads on a feature map).

Three heads predict a K-class centre heatmap, a size map (w, h, in feature cells) and an offset map
(x, y, from the cell centre, in cells). One DAM (one set of parameters) is applied to the teacher
feature and to the student feature mapped to the teacher's width;
:mod:`tat_mm.modules.area_extraction` turns its outputs into areas and masks.

SoKD describes each head as ``conv3x3 -> ReLU -> conv1x1`` (CenterNet) but fixes neither their width
nor whether they share layers. The 3x3 convs on a wide teacher map are the whole cost of DAM (run on
both branches, every step), so by default the three heads share that first conv
(``shared_conv=True``: one ``conv3x3 -> ReLU`` trunk, then one ``conv1x1`` per head, 3x cheaper);
``shared_conv=False`` gives the three separate heads, and ``stride=2`` runs the heads on a 2x2
average-pooled map and upsamples their outputs (4x cheaper again, for very large maps).
"""
import math
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .area_extraction import extract_areas

DAM_STRIDES = (1, 2)


def _conv3x3_relu(in_channels: int, feat_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, feat_channels, 3, padding=1), nn.ReLU(inplace=True))


def _head(in_channels: int, feat_channels: int, out_channels: int, with_conv3x3: bool) -> nn.Sequential:
    """``conv3x3 -> ReLU -> conv1x1`` (separate heads) or just ``conv1x1`` after a shared trunk."""
    layers = list(_conv3x3_relu(in_channels, feat_channels)) if with_conv3x3 else []
    return nn.Sequential(*layers, nn.Conv2d(feat_channels, out_channels, 1))


@MODELS.register_module()
class DAM(nn.Module):
    """Distinctive Area Detection Module.

    Args:
        in_channels (int): Channels of the input feature (the teacher's width).
        num_classes (int): Heatmap channels K (area classes; 1 = class-agnostic). Defaults to 1.
        feat_channels (int): Hidden channels of each head (of the shared trunk with
            ``shared_conv``). Defaults to 64 (CenterNet's ``head_conv`` for ResNet backbones; heads
            as wide as a 512- or 2048-channel feature would cost more than the student's own step).
        heatmap_prior (float): Initial heatmap probability (CenterNet's focal-loss prior, sets the
            heatmap bias). Defaults to 0.1.
        init_size (float): Initial predicted box size in cells (bias of the size head, whose last
            weights start near 0), so an untrained DAM gives ``init_size``-wide areas rather than
            single cells. Defaults to 3.0.
        shared_conv (bool): The three heads share their first ``conv3x3 -> ReLU`` and keep one
            ``conv1x1`` each (``shared_conv`` trunk); False gives three separate
            ``conv3x3 -> ReLU -> conv1x1`` heads (the CenterNet form, 3x the cost). Defaults to True.
        stride (int): 1, or 2 to run the heads on a 2x2 average-pooled map (``ceil_mode``) and
            upsample their raw outputs bilinearly back to the input size (sizes and offsets keep
            input-cell units). Defaults to 1.
    """

    def __init__(self,
                 in_channels: int,
                 num_classes: int = 1,
                 feat_channels: int = 64,
                 heatmap_prior: float = 0.1,
                 init_size: float = 3.0,
                 shared_conv: bool = True,
                 stride: int = 1) -> None:
        super().__init__()
        for name, value in (('in_channels', in_channels), ('num_classes', num_classes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'DAM {name} must be an integer >= 1, got {value!r}')
        if not isinstance(feat_channels, int) or feat_channels < 1:
            raise ValueError(f'DAM feat_channels must be an integer >= 1, got {feat_channels!r}')
        if not 0.0 < heatmap_prior < 1.0:
            raise ValueError(f'DAM heatmap_prior must be in (0, 1), got {heatmap_prior}')
        if stride not in DAM_STRIDES:
            raise ValueError(f'DAM stride must be one of {DAM_STRIDES}, got {stride!r}')
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.stride = stride
        # With shared_conv the trunk holds the one 3x3 conv and the heads are conv1x1 only.
        self.trunk = _conv3x3_relu(in_channels, feat_channels) if shared_conv else None
        separate = not shared_conv
        self.heatmap_head = _head(in_channels, feat_channels, num_classes, separate)
        self.size_head = _head(in_channels, feat_channels, 2, separate)
        self.offset_head = _head(in_channels, feat_channels, 2, separate)
        # CenterNet-style init: low heatmap prior, near-constant size / offset at the start.
        prior_bias = -math.log((1 - heatmap_prior) / heatmap_prior)
        nn.init.constant_(self.heatmap_head[-1].bias, prior_bias)
        for head, bias in ((self.size_head, init_size), (self.offset_head, 0.0)):
            nn.init.normal_(head[-1].weight, std=0.001)
            nn.init.constant_(head[-1].bias, bias)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """Predict the area maps.

        Args:
            x (Tensor): (B, in_channels, H, W) feature.

        Returns:
            dict[str, Tensor]: ``heatmap`` (B, K, H, W) sigmoid probabilities, ``size``
            (B, 2, H, W) and ``offset`` (B, 2, H, W), raw (negative sizes count as 0 when decoded).
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'DAM expects a (B, {self.in_channels}, H, W) feature, '
                             f'got {tuple(x.shape)}')
        size = x.shape[-2:]
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        if self.trunk is not None:
            x = self.trunk(x)
        heatmap, wh, offset = self.heatmap_head(x), self.size_head(x), self.offset_head(x)
        if self.stride > 1:
            # Raw outputs (logits, sizes, offsets) back to the input cells, so areas, masks and
            # CenterNet targets keep the input resolution.
            heatmap, wh, offset = (F.interpolate(y, size=size, mode='bilinear', align_corners=False)
                                   for y in (heatmap, wh, offset))
        # The maps leave in float32 (the heads' convs may run in float16 under AMP): in float16 the
        # sigmoid of a logit above ~8 is exactly 1, which makes the CenterNet focal loss's
        # log(1 - p) infinite and turns every such cell into a tie for the peak search.
        heatmap, wh, offset = (y.float() if y.dtype in (torch.float16, torch.bfloat16) else y
                               for y in (heatmap, wh, offset))
        return dict(heatmap=heatmap.sigmoid(), size=wh, offset=offset)

    def detect(self, x: Tensor, k: int = 8, kernel: int = 3, mode: str = 'binary',
               score_thr: Optional[float] = None) -> Dict[str, Tensor]:
        """Run the heads and extract areas (see :func:`extract_areas`); for inference / drawing.

        Args:
            x (Tensor): (B, in_channels, H, W) feature.
            k (int): Peaks per image. Defaults to 8.
            kernel (int): NMS window. Defaults to 3.
            mode (str): Mask mode. Defaults to 'binary'.
            score_thr (float, optional): Minimum peak score. Defaults to None.

        Returns:
            dict[str, Tensor]: The output of :func:`extract_areas` (no gradient).
        """
        out = self(x)
        return extract_areas(out['heatmap'], out['size'], out['offset'], k, kernel, mode, score_thr)
