"""VGG with BN for 32x32 inputs, as defined in the CRD code base (``vgg*_bn``, FC layers removed).

Five stages of conv3x3(-BN)-ReLU layers; stages 2-4 start with a 2x2 max-pool, stage 5 does not
(CRD pools before it only for 64x64 inputs), so on CIFAR the stages are at 32, 16, 8, 4, 4 pixels.
Convs per stage:

=======  ===============
VGG-8    1, 1, 1, 1, 1
VGG-11   1, 1, 2, 2, 2
VGG-13   2, 2, 2, 2, 2
VGG-16   2, 2, 3, 3, 3
VGG-19   2, 2, 4, 4, 4
=======  ===============

with widths 64, 128, 256, 512, 512. The classifier (a global average pool and one linear layer) is
the mmpretrain neck and head.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from .backbone_utils import check_out_indices, default_init_cfg


@MODELS.register_module()
class CIFARVGG(BaseBackbone):
    """CIFAR VGG with BN (CRD definition).

    Module names: ``layer1`` ... ``layer5``, each ``[max-pool] + (conv3x3 -> BN -> ReLU) x n``.
    Every stage output is post-ReLU; ``layer5`` (512 channels, 4x4 on CIFAR) is the usual
    distillation tap.

    Args:
        depth (int): 8, 11, 13, 16 or 19. Defaults to 13.
        in_channels (int): Input image channels. Defaults to 3.
        out_indices (Sequence[int]): Stages (0-4) whose outputs are returned. Defaults to ``(4, )``.
        norm_cfg (dict): Normalization layer config. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): Defaults to Kaiming (fan_out) convs and unit BN.
    """

    #: convs per stage
    arch_settings = {
        8: (1, 1, 1, 1, 1),
        11: (1, 1, 2, 2, 2),
        13: (2, 2, 2, 2, 2),
        16: (2, 2, 3, 3, 3),
        19: (2, 2, 4, 4, 4),
    }
    widths = (64, 128, 256, 512, 512)
    pool_before = (False, True, True, True, False)

    def __init__(self,
                 depth: int = 13,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (4, ),
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=default_init_cfg() if init_cfg is None else init_cfg)
        if depth not in self.arch_settings:
            raise ValueError(f'CIFARVGG: depth must be one of {sorted(self.arch_settings)}, '
                             f'got {depth}')
        self.depth = depth
        self.out_indices = check_out_indices(out_indices, 5, type(self).__name__)
        in_ch = in_channels
        for i, (num_convs, out_ch) in enumerate(zip(self.arch_settings[depth], self.widths)):
            layers = [nn.MaxPool2d(2, 2)] if self.pool_before[i] else []
            for _ in range(num_convs):
                # Conv bias kept as in the reference code (it precedes BN, so it is redundant).
                layers += [nn.Conv2d(in_ch, out_ch, 3, 1, 1), build_norm_layer(norm_cfg, out_ch)[1],
                           nn.ReLU(inplace=True)]
                in_ch = out_ch
            self.add_module(f'layer{i + 1}', nn.Sequential(*layers))
        self.out_channels = self.widths

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Return the outputs of the stages in ``out_indices``."""
        outs = []
        for i in range(5):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
