"""Anchor-point TaT loss (L^A_TaT, Lin et al., CVPR 2022, Sec. 3.3): full TaT over average-pooled
"anchors", which keeps long-range relations that patch groups cut."""
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from .feature_loss_utils import BaseFeatureLoss, weighted_mse
from .loss_statistics import SCALAR_TERM, ReportsStatistics
from .tat_attention import build_tat_embeddings, check_temperature, tat_attention
from .tat_loss import flatten_hw


def check_pool_size(owner: str, pool_size: int) -> int:
    """Check ``pool_size`` at build time (a positive int); returns it."""
    if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
        raise ValueError(f'{owner}: pool_size must be a positive int, got {pool_size!r}')
    return pool_size


def check_pool_fits(owner: str, pool_size: int, student_feat: torch.Tensor,
                    teacher_feat: torch.Tensor) -> None:
    """Raise ``ValueError`` when the pooling window is larger than the map."""
    height, width = student_feat.shape[2:]
    if pool_size > min(height, width):
        raise ValueError(f'{owner}: pool_size {pool_size} is larger than the {height}x{width} map '
                         f'(student {tuple(student_feat.shape)}, teacher {tuple(teacher_feat.shape)})')


def anchor_pool(x: torch.Tensor, pool_size: int) -> torch.Tensor:
    """k x k average pooling, stride k, partial windows at the border averaging their real pixels."""
    return F.avg_pool2d(x, pool_size, pool_size, ceil_mode=True)


def anchor_point_tat(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, target: torch.Tensor,
                     weight: Optional[torch.Tensor], pool_size: int,
                     temperature: float = 1.0, statistics: Optional[dict] = None) -> torch.Tensor:
    """Anchor-point TaT on already embedded maps: pool everything, full TaT, weighted MSE.

    Args:
        query (torch.Tensor): (B, Ct, H, W) gamma(student).
        key (torch.Tensor): (B, Ct, H, W) theta(teacher).
        value (torch.Tensor): (B, Ct, H, W) phi(student).
        target (torch.Tensor): (B, Ct, H, W) teacher feature.
        weight (torch.Tensor, optional): (B, 1, H, W) spatial weights (pooled like the features), or
            None.
        pool_size (int): pooling kernel and stride k.
        temperature (float): attention softmax temperature. Defaults to 1.0 (the paper).
        statistics (dict, optional): Filled with the attention's statistics (see
            :func:`tat_attention`). Defaults to None.

    Returns:
        torch.Tensor: scalar weighted MSE over the anchors.
    """
    def pooled(x: torch.Tensor) -> torch.Tensor:
        return flatten_hw(anchor_pool(x, pool_size))

    rebuilt = tat_attention(pooled(query), pooled(key), pooled(value), temperature=temperature,
                            statistics=statistics)
    return weighted_mse(rebuilt, pooled(target), None if weight is None else pooled(weight))


@MODELS.register_module()
class AnchorPointTaTLoss(ReportsStatistics, BaseFeatureLoss):
    """Full TaT (Eq. 7) over anchors obtained by k x k average pooling with stride k.

    gamma / theta / phi embed the full maps, then query, key, value, the teacher and the weight are
    average-pooled (kernel = stride = ``pool_size``); TaT over all anchors rebuilds the pooled student and
    the MSE is taken against the pooled teacher (the authors do not scatter back to pixels).

    Maps not divisible by ``pool_size`` use ``ceil_mode``: the last row/column of anchors averages only
    the real pixels its window covers (PyTorch's divisor excludes the part past the border), so
    there are ``ceil(H/k) x ceil(W/k)`` anchors and nothing is dropped or zero-diluted.

    ``weight`` (B, 1, H, W) is average-pooled like the features, and the MSE is
    ``sum(w * d^2) / (Ct * sum(w))`` over anchors and channels (all-ones weight = plain mean, all-zero
    weight = 0). It only confines the loss, not the attention.

    For the paper's segmentation objective (this term plus the patch-group term on the *same*
    embeddings, as the authors train it) use :class:`HierarchicalTaTLoss`; this loss is one term alone.

    Args:
        student_channels (int): student width Cs.
        teacher_channels (int): teacher width Ct.
        pool_size (int): pooling kernel and stride k.
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
                 pool_size: int,
                 query_embed: str = 'conv1x1',
                 key_embed: str = 'conv1x1',
                 value_embed: str = 'conv1x1',
                 temperature: float = 1.0,
                 loss_weight: float = 1.0):
        super().__init__(student_channels, teacher_channels, loss_weight)
        self.pool_size = check_pool_size(type(self).__name__, pool_size)
        self.temperature = check_temperature(type(self).__name__, temperature)
        self.query_embed, self.key_embed, self.value_embed = build_tat_embeddings(
            student_channels, teacher_channels, query_embed, key_embed, value_embed)

    def check_inputs(self, student_feat, teacher_feat, weight) -> None:
        super().check_inputs(student_feat, teacher_feat, weight)
        check_pool_fits(type(self).__name__, self.pool_size, student_feat, teacher_feat)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return anchor_pool(x, self.pool_size)

    def compute_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> torch.Tensor:
        statistics = {} if self.record_statistics else None  # see ReportsStatistics
        loss = anchor_point_tat(self.query_embed(student_feat), self.key_embed(teacher_feat),
                                self.value_embed(student_feat), teacher_feat, weight, self.pool_size,
                                self.temperature, statistics)
        if statistics is not None:
            self._keep_statistics({SCALAR_TERM: statistics})
        return loss
