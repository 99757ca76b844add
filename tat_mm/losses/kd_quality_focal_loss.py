"""CrossKD's classification mimicking loss: a quality focal loss towards the teacher's scores."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

from .feature_loss_utils import to_fp32


def reduce_dense_loss(loss: torch.Tensor, weight: Optional[torch.Tensor] = None,
                      avg_factor: Optional[float] = None) -> torch.Tensor:
    """mmdet's ``weight_reduce_loss`` with ``reduction='mean'``: weight element-wise, then the
    mean, or the sum divided by ``avg_factor`` (plus float32's eps, as mmdet) when it is given.

    Args:
        loss (torch.Tensor): Element-wise loss.
        weight (torch.Tensor, optional): Weights broadcastable to ``loss``. Defaults to None.
        avg_factor (float, optional): The normaliser (e.g. the number of positive anchors).
            Defaults to None (the mean over elements).

    Returns:
        torch.Tensor: Scalar loss.
    """
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return loss.mean()
    return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)


@MODELS.register_module()
class KDQualityFocalLoss(nn.Module):
    """``|sigmoid(s) - sigmoid(t)|^beta * BCE(s, sigmoid(t))`` per class and anchor (CrossKD, Eq. 4).

    The quality focal loss of GFL with the teacher's sigmoid scores as the soft target: the
    classification term of CrossKD (Wang et al., CVPR 2024) for every dense head
    (``KDQualityFocalLoss`` in the authors' ``mmdet/models/losses/kd_loss.py``, same arithmetic:
    mmdet's mean reduction, ``avg_factor`` = the number of positive anchors). Computed in float32
    (autocast off); the teacher is detached.

    Args:
        beta (float): Focusing exponent. Defaults to 1.0 (the authors' configs).
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, beta: float = 1.0, loss_weight: float = 1.0):
        super().__init__()
        if beta < 0:
            raise ValueError(f'KDQualityFocalLoss: beta must be >= 0, got {beta!r}')
        self.beta = beta
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            pred (torch.Tensor): (N, C) student (or cross-head) classification logits.
            target (torch.Tensor): (N, C) teacher logits.
            weight (torch.Tensor, optional): (N,) or (N, C) weights (the anchors' label weights).
                Defaults to None.
            avg_factor (float, optional): The normaliser. Defaults to None (the mean).

        Returns:
            torch.Tensor: Scalar loss, multiplied by ``loss_weight``.
        """
        if pred.shape != target.shape or pred.dim() != 2:
            raise ValueError('KDQualityFocalLoss: expected (N, C) predictions and teacher logits of '
                             f'the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}')
        if weight is not None and weight.dim() == 1:
            weight = weight[:, None]
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred = to_fp32(pred)
            soft = to_fp32(target.detach()).sigmoid()
            loss = F.binary_cross_entropy_with_logits(pred, soft, reduction='none')
            loss = loss * (pred.sigmoid() - soft).abs().pow(self.beta)
            loss = reduce_dense_loss(loss, None if weight is None else to_fp32(weight), avg_factor)
        return loss * self.loss_weight
