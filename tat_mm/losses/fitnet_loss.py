"""FitNet hint loss (Romero et al., ICLR 2015): pixel-to-pixel MSE after a connector, the one-to-one
matching baseline TaT improves on."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.registry import MODELS

from .feature_loss_utils import BaseFeatureLoss, weighted_mse
from .tat_attention import build_tat_embedding


@MODELS.register_module()
class FitNetLoss(BaseFeatureLoss):
    """MSE between ``connector(student)`` and the detached teacher.

    ``weight`` (B, 1, H, W) weights each position: ``sum(w * d^2) / (Ct * sum(w))`` over positions and
    channels, so all-ones weight equals the plain mean and all-zero weight gives 0.

    Reference: mdistiller's ``FitNet`` (``mdistiller/distillers/FitNet.py``): ``F.mse_loss`` (the
    plain mean) of ``ConvReg(student)`` and the teacher, where ``ConvReg``
    (``mdistiller/distillers/_common.py``) is a conv with bias, BN and, by default
    (``use_relu=True``), a ReLU; its CIFAR weight is 100 next to cross-entropy 1. Here the conv has
    no bias (the BN after it absorbs one exactly) and the ReLU is the ``relu`` option.

    ``relu`` defaults to False, unlike ``ConvReg``: (1) a ReLU makes the connector's output
    non-negative, so it can never match teacher features with negative values, which layers
    without a final activation have (FPN outputs, transformer tokens); mdistiller taps post-ReLU
    CIFAR stage outputs, where the teacher is non-negative too;
    (2) the evidence runs (docs/evidence.md, protocols v1 / v2 / v3) used FitNet without a ReLU,
    and the shipped configs keep that behaviour. Set ``relu=True`` to reproduce mdistiller.

    Args:
        student_channels (int): student width Cs.
        teacher_channels (int): teacher width Ct.
        connector (str): ``'conv1x1'`` (Conv1x1 without bias + BN), ``'conv3x3'`` or ``'identity'``
            (needs Cs == Ct). Defaults to ``'conv1x1'``.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
        relu (bool): a ReLU after the connector's BN (mdistiller's ``ConvReg``); needs a conv
            connector. Defaults to False.
    """

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 connector: str = 'conv1x1',
                 loss_weight: float = 1.0,
                 relu: bool = False):
        super().__init__(student_channels, teacher_channels, loss_weight)
        if relu and connector == 'identity':
            raise ValueError("FitNetLoss: relu=True puts a ReLU after the connector's conv + BN "
                             "(mdistiller's ConvReg); connector='identity' has none. Use "
                             "connector='conv1x1' or 'conv3x3', or relu=False")
        self.relu = bool(relu)
        self.connector = build_tat_embedding(connector, student_channels, teacher_channels)
        if self.relu:  # appended: the conv / BN keep their state_dict keys (connector.0 / .1)
            self.connector.append(nn.ReLU(inplace=True))

    def compute_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> torch.Tensor:
        return weighted_mse(self.connector(student_feat), teacher_feat, weight)
