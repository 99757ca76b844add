"""Hierarchical TaT loss for segmentation (Lin et al., CVPR 2022, Sec. 3.2 and Eq. 10): patch-group and
anchor-point distillation on one tapped pair, with one gamma / theta / phi shared by both terms."""
from typing import Dict, Optional

import torch
from mmengine.registry import MODELS

from .anchor_point_tat_loss import anchor_point_tat, check_pool_fits, check_pool_size
from .feature_loss_utils import BaseFeatureLoss
from .loss_statistics import ReportsStatistics
from .patch_group_tat_loss import (IntPair, check_patch_layout_fits, parse_patch_layout, patch_grid,
                                   patch_group_tat)
from .tat_attention import build_tat_embeddings, check_temperature


@MODELS.register_module()
class HierarchicalTaTLoss(ReportsStatistics, BaseFeatureLoss):
    """Patch-group + anchor-point TaT sharing one set of embeddings, as the authors train segmentation.

    The paper's segmentation objective (Eq. 10) is ``alpha * L_CE + delta * L^P_TaT + zeta * L^A_TaT``.
    The authors' code (``distillation_loss_all``) embeds once per tapped feature, ``q = gamma(f_s)``,
    ``k = theta(f_t)``, ``v = phi(f_s)`` (conv1x1 + BN each), and feeds the *same* q / k / v to both
    terms:

    * ``L^P``: q, k, v and the teacher cut into patches, ``group_size`` consecutive patches
      concatenated channel-wise, TaT inside each group (see :class:`PatchGroupTaTLoss`);
    * ``L^A``: q, k, v and the teacher average-pooled (kernel = stride = ``pool_size``), full TaT over
      the anchors (see :class:`AnchorPointTaTLoss`).

    So this loss is the paper's method with the authors' parameter count; the sum of a
    :class:`PatchGroupTaTLoss` and an :class:`AnchorPointTaTLoss` is the same objective only when their
    embeddings are tied (otherwise it trains two sets of gamma / theta / phi and pays for them twice).
    Both terms share the patching / pooling code of those two losses, and the one attention core.

    ``weight`` (B, 1, H, W) confines both terms: patched like the features for ``L^P``, average-pooled
    like the features for ``L^A`` (e.g. DAM's mask in :class:`DAMDistillLoss`). It never changes the
    attention, only which positions the MSE counts.

    Returns a dict ``{'loss_tat_pg': delta * L^P, 'loss_tat_ap': zeta * L^A}``; a distiller logs them as
    ``loss_tat_pg.<tap>`` and ``loss_tat_ap.<tap>``.

    Args:
        student_channels (int): student width Cs.
        teacher_channels (int): teacher width Ct.
        pool_size (int): anchor pooling kernel and stride k.
        patch_size (int | tuple[int, int], optional): patch (h, w). Defaults to None.
        patches_per_side (int | tuple[int, int], optional): patches along (H, W); the patch side is
            ``H // n`` (the authors' ``n``, ``m``). Exactly one of ``patch_size`` /
            ``patches_per_side`` must be given. Defaults to None.
        group_size (int): patches per group g. Defaults to 1.
        query_embed (str): gamma, see :class:`TaTLoss`. Defaults to ``'conv1x1'`` (authors' seg code).
        key_embed (str): theta (trainable when not identity). Defaults to ``'conv1x1'``.
        value_embed (str): phi. Defaults to ``'conv1x1'``.
        temperature (float): attention softmax temperature T, ``softmax(q k^T / T)``. Defaults to
            1.0 (the paper); see :class:`TaTLoss`.
        patch_weight (float): delta, the weight of ``L^P``. Defaults to 1.0.
        anchor_weight (float): zeta, the weight of ``L^A``. Defaults to 1.0.
    """

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 pool_size: int,
                 patch_size: Optional[IntPair] = None,
                 patches_per_side: Optional[IntPair] = None,
                 group_size: int = 1,
                 query_embed: str = 'conv1x1',
                 key_embed: str = 'conv1x1',
                 value_embed: str = 'conv1x1',
                 temperature: float = 1.0,
                 patch_weight: float = 1.0,
                 anchor_weight: float = 1.0):
        super().__init__(student_channels, teacher_channels)
        name = type(self).__name__
        self.patch_size, self.patches_per_side, self.group_size = parse_patch_layout(
            name, patch_size, patches_per_side, group_size)
        self.pool_size = check_pool_size(name, pool_size)
        self.temperature = check_temperature(name, temperature)
        self.patch_weight = patch_weight
        self.anchor_weight = anchor_weight
        self.query_embed, self.key_embed, self.value_embed = build_tat_embeddings(
            student_channels, teacher_channels, query_embed, key_embed, value_embed)

    def patch_grid(self, height: int, width: int):
        """Return ((h, w) patch size, (rows, cols) of patches) for a map, padding included."""
        return patch_grid(height, width, self.patch_size, self.patches_per_side)

    def check_inputs(self, student_feat, teacher_feat, weight) -> None:
        super().check_inputs(student_feat, teacher_feat, weight)
        name = type(self).__name__
        check_patch_layout_fits(name, self.patch_size, self.patches_per_side, student_feat, teacher_feat)
        check_pool_fits(name, self.pool_size, student_feat, teacher_feat)

    def compute_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        # One embedding of each map, used by both terms (the authors' distillation_loss_all).
        query = self.query_embed(student_feat)
        key = self.key_embed(teacher_feat)
        value = self.value_embed(student_feat)
        patch, grid = self.patch_grid(*teacher_feat.shape[2:])
        # Attention statistics of each term, only while recording (see ReportsStatistics).
        patch_stats, anchor_stats = ({}, {}) if self.record_statistics else (None, None)
        patch_term = patch_group_tat(query, key, value, teacher_feat, weight, patch, grid, self.group_size,
                                     self.temperature, patch_stats)
        anchor_term = anchor_point_tat(query, key, value, teacher_feat, weight, self.pool_size,
                                       self.temperature, anchor_stats)
        if self.record_statistics:
            self._keep_statistics(dict(loss_tat_pg=patch_stats, loss_tat_ap=anchor_stats))
        return dict(loss_tat_pg=self.patch_weight * patch_term,
                    loss_tat_ap=self.anchor_weight * anchor_term)
