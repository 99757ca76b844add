"""Patch-group TaT loss (L^P_TaT, Lin et al., CVPR 2022, Sec. 3.3): TaT inside groups of patches, so the
attention is (h*w)^2 per group instead of (H*W)^2 for the whole map."""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from .feature_loss_utils import BaseFeatureLoss, weighted_mse
from .loss_statistics import SCALAR_TERM, ReportsStatistics
from .tat_attention import build_tat_embeddings, check_temperature, tat_attention

IntPair = Union[int, Tuple[int, int]]


def _pair(value: IntPair, name: str, owner: str) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f'{owner}: {name} must be a positive int or a pair of them, got {value!r}')
    return pair


def parse_patch_layout(owner: str, patch_size: Optional[IntPair], patches_per_side: Optional[IntPair],
                       group_size: int) -> Tuple[Optional[Tuple[int, int]], Optional[Tuple[int, int]], int]:
    """Check the patch-group arguments at build time; returns them as ((h, w) | None, (n, m) | None, g).

    Args:
        owner (str): class name used in the error messages.
        patch_size (int | tuple[int, int], optional): patch (h, w).
        patches_per_side (int | tuple[int, int], optional): patches along (H, W).
        group_size (int): patches per group.
    """
    if (patch_size is None) == (patches_per_side is None):
        raise ValueError(f'{owner}: give exactly one of patch_size and patches_per_side, got '
                         f'patch_size={patch_size!r}, patches_per_side={patches_per_side!r}')
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f'{owner}: group_size must be a positive int, got {group_size!r}')
    return (None if patch_size is None else _pair(patch_size, 'patch_size', owner),
            None if patches_per_side is None else _pair(patches_per_side, 'patches_per_side', owner),
            group_size)


def patch_grid(height: int, width: int, patch_size: Optional[Tuple[int, int]],
               patches_per_side: Optional[Tuple[int, int]]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """((h, w) patch size, (rows, cols) of patches, padding included) of a ``height x width`` map."""
    if patch_size is not None:
        patch = patch_size
    else:
        patch = (height // patches_per_side[0], width // patches_per_side[1])
    return patch, (math.ceil(height / patch[0]), math.ceil(width / patch[1]))


def check_patch_layout_fits(owner: str, patch_size: Optional[Tuple[int, int]],
                            patches_per_side: Optional[Tuple[int, int]], student_feat: torch.Tensor,
                            teacher_feat: torch.Tensor) -> None:
    """Raise ``ValueError`` when the patches do not fit the map (naming the loss and the shapes)."""
    height, width = student_feat.shape[2:]
    shapes = f'student {tuple(student_feat.shape)}, teacher {tuple(teacher_feat.shape)}'
    if patch_size is not None and (patch_size[0] > height or patch_size[1] > width):
        raise ValueError(f'{owner}: patch_size {patch_size} is larger than the {height}x{width} map '
                         f'({shapes})')
    if patches_per_side is not None and (patches_per_side[0] > height or patches_per_side[1] > width):
        raise ValueError(f'{owner}: patches_per_side {patches_per_side} needs patches smaller than one '
                         f'pixel on the {height}x{width} map ({shapes})')


def group_patches(x: torch.Tensor, patch: Tuple[int, int], grid: Tuple[int, int],
                  group_size: int) -> torch.Tensor:
    """Cut (B, C, H, W) into groups of raster-ordered patches: (B, G, h*w, g, C).

    The map is zero-padded at the bottom/right to ``grid * patch`` and the patch list is padded with
    all-zero patches to a multiple of ``group_size`` (each only when needed). Pure reshapes, no loops,
    and one copy: memory keeps the channels before the positions ((B, G, g, C, h*w) underneath), so
    the result is a view whose (g, C) dims flatten without a copy and which the attention's matrix
    products read transposed (a channels-last copy of each map cost more than the attention itself).
    """
    (ph, pw), (nh, nw) = patch, grid
    b, c, h, w = x.shape
    if (nh * ph, nw * pw) != (h, w):
        x = F.pad(x, (0, nw * pw - w, 0, nh * ph - h))
    patches = x.view(b, c, nh, ph, nw, pw).permute(0, 2, 4, 1, 3, 5)  # (B, nh, nw, C, h, w) view
    num_groups = math.ceil(nh * nw / group_size)
    if num_groups * group_size == nh * nw:
        x = patches.reshape(b, nh * nw, c, ph * pw)
    else:  # gather straight into the zero-padded patch list (no second copy for the padding)
        x = x.new_zeros(b, num_groups * group_size, c, ph * pw)
        x[:, :nh * nw].view(b, nh, nw, c, ph, pw).copy_(patches)
    return x.view(b, num_groups, group_size, c, ph * pw).permute(0, 1, 4, 2, 3)


def patch_group_tat(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, target: torch.Tensor,
                    weight: Optional[torch.Tensor], patch: Tuple[int, int], grid: Tuple[int, int],
                    group_size: int, temperature: float = 1.0,
                    statistics: Optional[dict] = None) -> torch.Tensor:
    """Patch-group TaT on already embedded maps (steps 2-5 of :class:`PatchGroupTaTLoss`).

    Args:
        query (torch.Tensor): (B, Ct, H, W) gamma(student).
        key (torch.Tensor): (B, Ct, H, W) theta(teacher).
        value (torch.Tensor): (B, Ct, H, W) phi(student).
        target (torch.Tensor): (B, Ct, H, W) teacher feature.
        weight (torch.Tensor, optional): (B, 1, H, W) spatial weights, or None.
        patch (tuple[int, int]): patch (h, w), see :func:`patch_grid`.
        grid (tuple[int, int]): patch rows and columns, padding included.
        group_size (int): patches per group g.
        temperature (float): attention softmax temperature. Defaults to 1.0 (the paper).
        statistics (dict, optional): Filled with the attention's statistics (see
            :func:`tat_attention`). Defaults to None.

    Returns:
        torch.Tensor: scalar weighted MSE.
    """
    batch, _, height, width = target.shape
    spatial_pad = grid[0] * patch[0] != height or grid[1] * patch[1] != width
    group_pad = grid[0] * grid[1] % group_size != 0

    def to_groups(x: torch.Tensor) -> torch.Tensor:
        return group_patches(x, patch, grid, group_size)  # (B, G, N, g, C)

    target_groups = to_groups(target)
    key_mask = None
    if spatial_pad:
        # (1, G, N, g, 1) validity -> a position is a key if it is real in at least one patch.
        valid = to_groups(target.new_ones(1, 1, height, width))
        key_mask = valid.squeeze(-1).amax(-1).bool().unsqueeze(-2)  # (1, G, 1, N)
    # Channel-concatenate the g patches of a group: (B, G, N, g*C); the batch and the groups are
    # independent attention problems, as (batch, heads) of the attention kernel.
    rebuilt = tat_attention(to_groups(query).flatten(3), to_groups(key).flatten(3),
                            to_groups(value).flatten(3), key_mask, temperature, statistics)
    rebuilt = rebuilt.view(target_groups.shape)
    if weight is None and not (spatial_pad or group_pad):
        return weighted_mse(rebuilt, target_groups)
    if weight is None:
        weight = target.new_ones(batch, 1, height, width)
    return weighted_mse(rebuilt, target_groups, to_groups(weight))


@MODELS.register_module()
class PatchGroupTaTLoss(ReportsStatistics, BaseFeatureLoss):
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

    For the paper's segmentation objective (this term plus the anchor-point term on the *same*
    embeddings, as the authors train it) use :class:`HierarchicalTaTLoss`; this loss is one term alone.

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
        temperature (float): attention softmax temperature T, ``softmax(q k^T / T)``. Defaults to
            1.0 (the paper); see :class:`TaTLoss`.
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
                 temperature: float = 1.0,
                 loss_weight: float = 1.0):
        super().__init__(student_channels, teacher_channels, loss_weight)
        self.patch_size, self.patches_per_side, self.group_size = parse_patch_layout(
            type(self).__name__, patch_size, patches_per_side, group_size)
        self.temperature = check_temperature(type(self).__name__, temperature)
        self.query_embed, self.key_embed, self.value_embed = build_tat_embeddings(
            student_channels, teacher_channels, query_embed, key_embed, value_embed)

    def patch_grid(self, height: int, width: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """Return ((h, w) patch size, (rows, cols) of patches) for a map, padding included."""
        return patch_grid(height, width, self.patch_size, self.patches_per_side)

    def check_inputs(self, student_feat, teacher_feat, weight) -> None:
        super().check_inputs(student_feat, teacher_feat, weight)
        check_patch_layout_fits(type(self).__name__, self.patch_size, self.patches_per_side,
                                student_feat, teacher_feat)

    def compute_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> torch.Tensor:
        patch, grid = self.patch_grid(*teacher_feat.shape[2:])
        statistics = {} if self.record_statistics else None  # see ReportsStatistics
        loss = patch_group_tat(self.query_embed(student_feat), self.key_embed(teacher_feat),
                               self.value_embed(student_feat), teacher_feat, weight, patch, grid,
                               self.group_size, self.temperature, statistics)
        if statistics is not None:
            self._keep_statistics({SCALAR_TERM: statistics})
        return loss
