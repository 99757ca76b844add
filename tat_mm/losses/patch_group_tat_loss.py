"""Patch-group TaT loss (L^P_TaT, Lin et al., CVPR 2022, Sec. 3.3): TaT inside groups of patches, so the
attention is (h*w)^2 per group instead of (H*W)^2 for the whole map."""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from .feature_loss_utils import BaseFeatureLoss, weighted_mse
from .tat_attention import build_tat_embeddings, tat_attention

IntPair = Union[int, Tuple[int, int]]


def _pair(value: IntPair, name: str, owner: str) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f'{owner}: {name} must be a positive int or a pair of them, got {value!r}')
    return pair


def group_patches(x: torch.Tensor, patch: Tuple[int, int], grid: Tuple[int, int],
                  group_size: int) -> torch.Tensor:
    """Cut (B, C, H, W) into groups of raster-ordered patches: (B, G, h*w, g, C).

    The map is zero-padded at the bottom/right to ``grid * patch`` and the patch list is padded with
    all-zero patches to a multiple of ``group_size``. Pure reshapes, no loops.
    """
    (ph, pw), (nh, nw) = patch, grid
    b, c, h, w = x.shape
    x = F.pad(x, (0, nw * pw - w, 0, nh * ph - h))
    x = x.view(b, c, nh, ph, nw, pw).permute(0, 2, 4, 3, 5, 1).reshape(b, nh * nw, ph * pw, c)
    num_groups = math.ceil(nh * nw / group_size)
    x = F.pad(x, (0, 0, 0, 0, 0, num_groups * group_size - nh * nw))
    return x.view(b, num_groups, group_size, ph * pw, c).transpose(2, 3)


@MODELS.register_module()
class PatchGroupTaTLoss(BaseFeatureLoss):
    """TaT inside groups of patches (patch-group distillation, L^P_TaT).

    1. gamma / theta / phi embed the *full* student / teacher maps first (BN statistics over whole maps,
       3x3 convs see across patch borders), giving query, key and value of width Ct.
    2. Query, key, value, the teacher and the weight are cut into non-overlapping h x w patches. With
       ``patches_per_side=n`` the patch side is ``H // n`` (the authors' patch size); a remainder the
       authors drop is instead covered by one more patch row/column, zero-padded at the bottom/right
       (e.g. 129 with n=16: 8-pixel patches, 17 per side, the last holding 1 real row).
    3. ``g = group_size`` consecutive patches in raster order form a group; their channels are
       concatenated, so each group is (g*Ct, h, w). If the patch count is not a multiple of g, empty
       (all-zero) patches are appended to fill the last group.
    4. In each group, TaT (Eq. 7) over its h*w positions: ``softmax(q k^T) v`` on (h*w, g*Ct) tensors.
       Positions that are padding in *every* patch of the group are removed from the softmax (masked
       keys), so with g=1 padding never enters the attention; with g>1 a position real in some patches
       keeps zeros in the channel blocks of the patches where it is padding (like conv zero-padding).
    5. MSE between the rebuilt student and the teacher patches, ``sum(w * d^2) / (Ct * sum(w))`` over
       (patch, position) pairs and channels. ``w`` is the user ``weight`` (B, 1, H, W) (default ones)
       patched like the features, with weight 0 on padded positions and on the appended empty patches,
       so padding never counts. Without padding and with all-ones weight this is the plain mean MSE.

    Everything is batched with reshapes: no loops over images, patches or groups.

    Args:
        student_channels (int): student width Cs.
        teacher_channels (int): teacher width Ct.
        patch_size (int | tuple[int, int], optional): patch (h, w). Defaults to None.
        patches_per_side (int | tuple[int, int], optional): patches along (H, W); the patch side is
            ``H // n``. Exactly one of ``patch_size`` / ``patches_per_side`` must be given. Defaults
            to None.
        group_size (int): patches per group g. Defaults to 1.
        query_embed (str): gamma, see :class:`TaTLoss`. Defaults to ``'conv1x1'`` (authors' seg code).
        key_embed (str): theta (trainable when not identity). Defaults to ``'conv1x1'``.
        value_embed (str): phi. Defaults to ``'conv1x1'``.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 patch_size: Optional[IntPair] = None,
                 patches_per_side: Optional[IntPair] = None,
                 group_size: int = 1,
                 query_embed: str = 'conv1x1',
                 key_embed: str = 'conv1x1',
                 value_embed: str = 'conv1x1',
                 loss_weight: float = 1.0):
        super().__init__(student_channels, teacher_channels, loss_weight)
        name = type(self).__name__
        if (patch_size is None) == (patches_per_side is None):
            raise ValueError(f'{name}: give exactly one of patch_size and patches_per_side, got '
                             f'patch_size={patch_size!r}, patches_per_side={patches_per_side!r}')
        self.patch_size = None if patch_size is None else _pair(patch_size, 'patch_size', name)
        self.patches_per_side = (None if patches_per_side is None else
                                 _pair(patches_per_side, 'patches_per_side', name))
        if not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f'{name}: group_size must be a positive int, got {group_size!r}')
        self.group_size = group_size
        self.query_embed, self.key_embed, self.value_embed = build_tat_embeddings(
            student_channels, teacher_channels, query_embed, key_embed, value_embed)

    def patch_grid(self, height: int, width: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """Return ((h, w) patch size, (rows, cols) of patches) for a map, padding included."""
        if self.patch_size is not None:
            patch = self.patch_size
        else:
            patch = (height // self.patches_per_side[0], width // self.patches_per_side[1])
        return patch, (math.ceil(height / patch[0]), math.ceil(width / patch[1]))

    def check_inputs(self, student_feat, teacher_feat, weight) -> None:
        super().check_inputs(student_feat, teacher_feat, weight)
        height, width = student_feat.shape[2:]
        if self.patch_size is not None and (self.patch_size[0] > height or self.patch_size[1] > width):
            raise ValueError(f'{type(self).__name__}: patch_size {self.patch_size} is larger than the '
                             f'{height}x{width} map (student {tuple(student_feat.shape)}, teacher '
                             f'{tuple(teacher_feat.shape)})')
        if self.patches_per_side is not None and (self.patches_per_side[0] > height
                                                   or self.patches_per_side[1] > width):
            raise ValueError(f'{type(self).__name__}: patches_per_side {self.patches_per_side} needs '
                             f'patches smaller than one pixel on the {height}x{width} map (student '
                             f'{tuple(student_feat.shape)}, teacher {tuple(teacher_feat.shape)})')

    def compute_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> torch.Tensor:
        batch, _, height, width = teacher_feat.shape
        patch, grid = self.patch_grid(height, width)
        spatial_pad = grid[0] * patch[0] != height or grid[1] * patch[1] != width
        group_pad = grid[0] * grid[1] % self.group_size != 0

        def to_groups(x: torch.Tensor) -> torch.Tensor:
            return group_patches(x, patch, grid, self.group_size)  # (B, G, N, g, C)

        query = to_groups(self.query_embed(student_feat))
        key = to_groups(self.key_embed(teacher_feat))
        value = to_groups(self.value_embed(student_feat))
        target = to_groups(teacher_feat)
        key_mask = None
        if spatial_pad:
            # (1, G, N, g, 1) validity -> a position is a key if it is real in at least one patch.
            valid = to_groups(teacher_feat.new_ones(1, 1, height, width))
            key_mask = valid.squeeze(-1).amax(-1).bool().unsqueeze(-2)  # (1, G, 1, N)
        # Channel-concatenate the g patches of a group: (B, G, N, g*C); the batch and the groups are
        # independent attention problems, as (batch, heads) of the attention kernel.
        rebuilt = tat_attention(query.flatten(3), key.flatten(3), value.flatten(3), key_mask)
        rebuilt = rebuilt.view(target.shape)
        if weight is None and not (spatial_pad or group_pad):
            return weighted_mse(rebuilt, target)
        if weight is None:
            weight = teacher_feat.new_ones(batch, 1, height, width)
        return weighted_mse(rebuilt, target, to_groups(weight))
