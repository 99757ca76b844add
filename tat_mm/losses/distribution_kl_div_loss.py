"""KL divergence between discrete distributions given as logits (GFL's box distributions)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

from .feature_loss_utils import to_fp32
from .kd_quality_focal_loss import reduce_dense_loss


@MODELS.register_module()
class DistributionKLDivLoss(nn.Module):
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` per row, summed over the bins of the row.

    The box-distribution term of CrossKD for GFL heads (the authors'
    ``KnowledgeDistillationKLDivLoss`` with ``class_reduction='sum'``, same arithmetic). mmdet's
    own ``KnowledgeDistillationKLDivLoss`` (LD) averages over the bins instead, which is this
    loss divided by the number of bins (17 for ``reg_max=16``). Computed in float32 (autocast
    off); the teacher is detached.

    Args:
        temperature (float): Softmax temperature T. Defaults to 1.0 (CrossKD's GFL config).
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, temperature: float = 1.0, loss_weight: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'DistributionKLDivLoss: temperature must be positive, got {temperature!r}')
        self.temperature = temperature
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            pred (torch.Tensor): (N, K) student (or cross-head) logits, one distribution per row.
            target (torch.Tensor): (N, K) teacher logits.
            weight (torch.Tensor, optional): (N,) weights per row. Defaults to None.
            avg_factor (float, optional): The normaliser. Defaults to None (the mean over rows).

        Returns:
            torch.Tensor: Scalar loss, multiplied by ``loss_weight``.
        """
        if pred.shape != target.shape or pred.dim() != 2:
            raise ValueError('DistributionKLDivLoss: expected (N, K) logits of the same shape, got '
                             f'{tuple(pred.shape)} and {tuple(target.shape)}')
        t = self.temperature
        with torch.autocast(device_type=pred.device.type, enabled=False):
            log_p_s = F.log_softmax(to_fp32(pred) / t, dim=1)
            log_p_t = F.log_softmax(to_fp32(target.detach()) / t, dim=1)
            loss = F.kl_div(log_p_s, log_p_t, reduction='none', log_target=True).sum(1) * t * t
            loss = reduce_dense_loss(loss, None if weight is None else to_fp32(weight), avg_factor)
        return loss * self.loss_weight
