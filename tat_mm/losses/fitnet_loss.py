"""FitNet hint loss (Romero et al., ICLR 2015): pixel-to-pixel MSE after a connector, the one-to-one
matching baseline TaT improves on."""
from typing import Optional

import torch
from mmengine.registry import MODELS

from .feature_loss_utils import BaseFeatureLoss, weighted_mse
from .tat_attention import build_tat_embedding


@MODELS.register_module()
class FitNetLoss(BaseFeatureLoss):
    """MSE between ``connector(student)`` and the detached teacher.

    ``weight`` (B, 1, H, W) weights each position: ``sum(w * d^2) / (Ct * sum(w))`` over positions and
    channels, so all-ones weight equals the plain mean and all-zero weight gives 0.

    Args:
        student_channels (int): student width Cs.
        teacher_channels (int): teacher width Ct.
        connector (str): ``'conv1x1'`` (Conv1x1 without bias + BN), ``'conv3x3'`` or ``'identity'``
            (needs Cs == Ct). Defaults to ``'conv1x1'``.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 connector: str = 'conv1x1',
                 loss_weight: float = 1.0):
        super().__init__(student_channels, teacher_channels, loss_weight)
        self.connector = build_tat_embedding(connector, student_channels, teacher_channels)

    def compute_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> torch.Tensor:
        return weighted_mse(self.connector(student_feat), teacher_feat, weight)
