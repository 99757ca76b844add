"""Wide ResNets for 32x32 inputs (Zagoruyko & Komodakis 2016), as defined in the CRD code base.

WRN-d-k: a 3x3 stem of 16 channels, then three stages of pre-activation blocks (BN-ReLU-conv3x3-
BN-ReLU-conv3x3) with widths (16k, 32k, 64k) at strides 1, 2, 2; depth ``6n + 4`` gives ``n`` blocks
per stage. The network's closing BN-ReLU (before pooling) belongs to ``layer3`` here, so the last stage
returns the activated 8x8 feature the classifier sees (CRD keeps it as separate ``bn1``/``relu``).
WRN-40-2: depth=40, widen_factor=2 (128 channels out); WRN-16-2: 16, 2; WRN-40-1: 40, 1.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from .backbone_utils import check_out_indices, default_init_cfg


class PreActBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus the shortcut.

    As in the reference code, when the width or stride changes the shortcut (a 1x1 conv) takes the
    *activated* input, otherwise the raw input.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first conv. Defaults to 1.
        drop_rate (float): Dropout between the convs. Defaults to 0.0.
        norm_cfg (dict): Normalization layer config. Defaults to ``dict(type='BN')``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, drop_rate: float = 0.0,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.bn1 = build_norm_layer(norm_cfg, in_channels)[1]
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = build_norm_layer(norm_cfg, out_channels)[1]
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.drop_rate = drop_rate
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(act)
        out = self.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + identity


@MODELS.register_module()
class CIFARWideResNet(BaseBackbone):
    """CIFAR Wide ResNet WRN-d-k (CRD definition).

    Module names: ``stem`` (a 3x3 conv), ``layer1``, ``layer2``, ``layer3`` (the last ending with
    the closing BN-ReLU). Outputs of ``layer1``/``layer2`` are pre-activation sums (as in any
    pre-activation net); ``layer3`` is activated and is the usual distillation tap.

    Args:
        depth (int): ``6n + 4`` (16, 28, 40, ...). Defaults to 40.
        widen_factor (int): k. Defaults to 2.
        drop_rate (float): Dropout inside the blocks. Defaults to 0.0 (CRD).
        in_channels (int): Input image channels. Defaults to 3.
        out_indices (Sequence[int]): Stages (0-2) whose outputs are returned. Defaults to ``(2, )``.
        norm_cfg (dict): Normalization layer config. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): Defaults to Kaiming (fan_out) convs and unit BN.
    """

    def __init__(self,
                 depth: int = 40,
                 widen_factor: int = 2,
                 drop_rate: float = 0.0,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (2, ),
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=default_init_cfg() if init_cfg is None else init_cfg)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f'CIFARWideResNet: depth must be 6n + 4 with n >= 1 (16, 28, 40, ...), '
                             f'got {depth}')
        if not isinstance(widen_factor, int) or widen_factor < 1:
            raise ValueError('CIFARWideResNet: widen_factor must be a positive int, got '
                             f'{widen_factor!r}')
        self.depth = depth
        self.widen_factor = widen_factor
        self.out_indices = check_out_indices(out_indices, 3, type(self).__name__)
        blocks = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        in_ch = 16
        for i, (out_ch, stride) in enumerate(zip(widths, (1, 2, 2))):
            layers = [PreActBlock(in_ch if j == 0 else out_ch, out_ch, stride if j == 0 else 1,
                                  drop_rate, norm_cfg) for j in range(blocks)]
            if i == 2:  # the network's closing BN-ReLU
                layers += [build_norm_layer(norm_cfg, out_ch)[1], nn.ReLU(inplace=True)]
            self.add_module(f'layer{i + 1}', nn.Sequential(*layers))
            in_ch = out_ch
        self.out_channels = widths

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Return the outputs of the stages in ``out_indices``."""
        x = self.stem(x)
        outs = []
        for i in range(3):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
