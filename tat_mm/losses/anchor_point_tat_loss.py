"""Anchor-point TaT loss (L^A_TaT, Lin et al., CVPR 2022, Sec. 3.3): full TaT over average-pooled
"anchors", which keeps long-range relations that patch groups cut."""
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from .feature_loss_utils import BaseFeatureLoss, weighted_mse
from .tat_attention import build_tat_embeddings, tat_attention
from .tat_loss import flatten_hw


@MODELS.register_module()
class AnchorPointTaTLoss(BaseFeatureLoss):
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

    Args:
        student_channels (int): student width Cs.
        teacher_channels (int): teacher width Ct.
        pool_size (int): pooling kernel and stride k.
        query_embed (str): gamma, see :class:`TaTLoss`. Defaults to ``'conv1x1'`` (authors' seg code).
        key_embed (str): theta (trainable when not identity). Defaults to ``'conv1x1'``.
        value_embed (str): phi. Defaults to ``'conv1x1'``.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 pool_size: int,
                 query_embed: str = 'conv1x1',
                 key_embed: str = 'conv1x1',
                 value_embed: str = 'conv1x1',
                 loss_weight: float = 1.0):
        super().__init__(student_channels, teacher_channels, loss_weight)
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f'{type(self).__name__}: pool_size must be a positive int, got {pool_size!r}')
        self.pool_size = pool_size
        self.query_embed, self.key_embed, self.value_embed = build_tat_embeddings(
            student_channels, teacher_channels, query_embed, key_embed, value_embed)

    def check_inputs(self, student_feat, teacher_feat, weight) -> None:
        super().check_inputs(student_feat, teacher_feat, weight)
        height, width = student_feat.shape[2:]
        if self.pool_size > min(height, width):
            raise ValueError(f'{type(self).__name__}: pool_size {self.pool_size} is larger than the '
                             f'{height}x{width} map (student {tuple(student_feat.shape)}, teacher '
                             f'{tuple(teacher_feat.shape)})')

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.pool_size, self.pool_size, ceil_mode=True)

    def compute_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> torch.Tensor:
        query = flatten_hw(self.pool(self.query_embed(student_feat)))
        key = flatten_hw(self.pool(self.key_embed(teacher_feat)))
        value = flatten_hw(self.pool(self.value_embed(student_feat)))
        rebuilt = tat_attention(query, key, value)
        return weighted_mse(rebuilt, flatten_hw(self.pool(teacher_feat)),
                            None if weight is None else flatten_hw(self.pool(weight)))
