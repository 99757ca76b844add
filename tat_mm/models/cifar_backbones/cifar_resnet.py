"""ResNets for 32x32 inputs (He et al. 2016, Sec. 4.2), as defined in the CRD code base.

A 3x3 stem and three stages of BasicBlocks at strides 1, 2, 2 (32x32 -> 32, 16, 8 for CIFAR). Depth
``6n + 2`` gives ``n`` blocks per stage. Channels (stem, stage 1, stage 2, stage 3):

====================  ======================  ==========
name                  channels                depth
====================  ======================  ==========
ResNet-20/32/56/110   (16, 16, 32, 64)        20/32/56/110
ResNet-8x4/32x4       (32, 64, 128, 256)      8/32
====================  ======================  ==========

"x4" is the CRD naming: the stages are 4x wider, the stem only 2x (32, not 64).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from .backbone_utils import check_out_indices, default_init_cfg


class BasicBlock(nn.Module):
    """Post-activation residual block: conv3x3-BN-ReLU-conv3x3-BN, add, ReLU.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first conv. Defaults to 1.
        norm_cfg (dict): Normalization layer config. Defaults to ``dict(type='BN')``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = build_norm_layer(norm_cfg, out_channels)[1]
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = build_norm_layer(norm_cfg, out_channels)[1]
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                build_norm_layer(norm_cfg, out_channels)[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


@MODELS.register_module()
class CIFARResNet(BaseBackbone):
    """CIFAR ResNet (CRD definition): 3x3 stem, three stages of BasicBlocks.

    Module names: ``stem`` (conv-BN-ReLU), ``layer1``, ``layer2``, ``layer3``. Every stage output is
    post-ReLU; the last stage (8x8 on CIFAR) is the usual distillation tap (``backbone.layer3``).

    Args:
        depth (int): ``6n + 2`` (8, 14, 20, 32, 44, 56, 110, ...). Defaults to 20.
        channels (Sequence[int]): (stem, stage 1, stage 2, stage 3) widths. Defaults to
            ``(16, 16, 32, 64)``; ResNet-8x4/32x4 use ``(32, 64, 128, 256)``.
        in_channels (int): Input image channels. Defaults to 3.
        out_indices (Sequence[int]): Stages (0-2) whose outputs are returned. Defaults to ``(2, )``.
        norm_cfg (dict): Normalization layer config. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): Defaults to Kaiming (fan_out) convs and unit BN.
    """

    def __init__(self,
                 depth: int = 20,
                 channels: Sequence[int] = (16, 16, 32, 64),
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (2, ),
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=default_init_cfg() if init_cfg is None else init_cfg)
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f'CIFARResNet: depth must be 6n + 2 with n >= 1 (20, 32, 56, 110, ...), '
                             f'got {depth}')
        if len(channels) != 4:
            raise ValueError('CIFARResNet: channels must be (stem, stage1, stage2, stage3), got '
                             f'{channels!r}')
        self.depth = depth
        self.channels = tuple(channels)
        self.out_indices = check_out_indices(out_indices, 3, type(self).__name__)
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False),
            build_norm_layer(norm_cfg, channels[0])[1], nn.ReLU(inplace=True))
        in_ch = channels[0]
        for i, (out_ch, stride) in enumerate(zip(channels[1:], (1, 2, 2))):
            layers = [BasicBlock(in_ch if j == 0 else out_ch, out_ch, stride if j == 0 else 1, norm_cfg)
                      for j in range(blocks)]
            self.add_module(f'layer{i + 1}', nn.Sequential(*layers))
            in_ch = out_ch
        self.out_channels = channels[1:]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Return the outputs of the stages in ``out_indices``."""
        x = self.stem(x)
        outs = []
        for i in range(3):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
