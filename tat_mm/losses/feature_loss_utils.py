"""What every feature-distillation loss shares: input checks, fp32 computation and the weighted MSE."""
import contextlib
from typing import Dict, Optional, Union

import torch
import torch.nn as nn

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def to_fp32(x: torch.Tensor) -> torch.Tensor:
    """Cast fp16/bf16 to fp32 and leave fp32/fp64 alone (the float64 tests stay float64)."""
    return x.float() if x.dtype in _LOW_PRECISION else x


_KEEP_TEACHER_GRAPH = [False]


@contextlib.contextmanager
def teacher_graph_kept():
    """Inside: feature losses do not detach the teacher feature.

    Only DAFA's search passes use it: the augmentation's magnitudes learn through the gradient of
    the feature loss with respect to the (augmented) teacher feature. The teacher network itself
    is never differentiated (it runs under ``no_grad``).
    """
    _KEEP_TEACHER_GRAPH[0] = True
    try:
        yield
    finally:
        _KEEP_TEACHER_GRAPH[0] = False


def detach_teacher(feat: torch.Tensor) -> torch.Tensor:
    """``feat.detach()``, except inside :func:`teacher_graph_kept`."""
    return feat if _KEEP_TEACHER_GRAPH[0] else feat.detach()


def weighted_mse(pred: torch.Tensor,
                 target: torch.Tensor,
                 weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Weighted mean squared error ``sum(w * d^2) / (C * sum(w))``.

    ``weight`` has the rank of ``pred`` with size 1 along the channel dims it is broadcast over, so
    ``C = pred.numel() / weight.numel()``. With all-ones weight this is the plain mean (the authors'
    ``nn.MSELoss()``); an all-zero weight gives 0 rather than NaN (the denominator is clamped).

    Args:
        pred (torch.Tensor): prediction.
        target (torch.Tensor): target, same shape as ``pred``.
        weight (torch.Tensor, optional): non-negative weights broadcastable to ``pred`` along
            size-1 dims only. Defaults to None (plain mean).

    Returns:
        torch.Tensor: scalar loss.
    """
    sq_diff = (pred - target).pow(2)
    if weight is None:
        return sq_diff.mean()
    denom = weight.sum() * (sq_diff.numel() // weight.numel())
    return (sq_diff * weight).sum() / denom.clamp_min(torch.finfo(denom.dtype).tiny)


class BaseFeatureLoss(nn.Module):
    """Base of the feature losses: checks inputs, detaches the teacher, computes in fp32.

    Subclasses implement :meth:`compute_loss` (and may extend :meth:`check_inputs`); a loss with
    several terms returns them as a dict of named scalars, each multiplied by ``loss_weight``.
    ``forward`` casts fp16/bf16 inputs to fp32 and runs ``compute_loss`` with autocast disabled, so
    mixed-precision training gets a stable fp32 loss from the fp32 embedding parameters.

    Args:
        student_channels (int): student width Cs.
        teacher_channels (int): teacher width Ct.
        loss_weight (float): multiplier of the returned loss. Defaults to 1.0.
    """

    def __init__(self, student_channels: int, teacher_channels: int, loss_weight: float = 1.0):
        super().__init__()
        for name, value in (('student_channels', student_channels), ('teacher_channels', teacher_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'{type(self).__name__}: {name} must be a positive int, got {value!r}')
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.loss_weight = loss_weight

    def check_inputs(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> None:
        """Raise ``ValueError`` naming the loss and the shapes when the inputs do not fit."""
        name = type(self).__name__
        s_shape, t_shape = tuple(student_feat.shape), tuple(teacher_feat.shape)
        shapes = f'student {s_shape}, teacher {t_shape}'
        if student_feat.dim() != 4 or teacher_feat.dim() != 4:
            raise ValueError(f'{name}: expected 4D (B, C, H, W) features, got {shapes}')
        if s_shape[0] != t_shape[0] or s_shape[2:] != t_shape[2:]:
            raise ValueError(f'{name}: student and teacher need the same batch and spatial size, got {shapes}')
        if s_shape[1] != self.student_channels or t_shape[1] != self.teacher_channels:
            raise ValueError(f'{name}: configured for {self.student_channels} student / '
                             f'{self.teacher_channels} teacher channels, got {shapes}')
        if weight is not None:
            expected = (s_shape[0], 1) + s_shape[2:]
            if tuple(weight.shape) != expected:
                raise ValueError(f'{name}: weight must have shape {expected} (B, 1, H, W), got '
                                 f'{tuple(weight.shape)} for {shapes}')

    def forward(self,
                student_feat: torch.Tensor,
                teacher_feat: torch.Tensor,
                weight: Optional[torch.Tensor] = None) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        """Compute the loss.

        Args:
            student_feat (torch.Tensor): (B, Cs, H, W) student feature.
            teacher_feat (torch.Tensor): (B, Ct, H, W) teacher feature (detached here).
            weight (torch.Tensor, optional): (B, 1, H, W) non-negative spatial weights. Defaults to
                None (all positions weigh 1).

        Returns:
            torch.Tensor | dict[str, torch.Tensor]: scalar fp32 (or fp64) loss, already multiplied
            by ``loss_weight`` (or a dict of such terms for multi-term losses).
        """
        self.check_inputs(student_feat, teacher_feat, weight)
        student_feat = to_fp32(student_feat)
        teacher_feat = to_fp32(detach_teacher(teacher_feat))
        if weight is not None:
            weight = weight.detach().to(teacher_feat.dtype)
        with torch.autocast(device_type=student_feat.device.type, enabled=False):
            loss = self.compute_loss(student_feat, teacher_feat, weight)
        if isinstance(loss, dict):
            return {name: term * self.loss_weight for name, term in loss.items()}
        return loss * self.loss_weight

    def compute_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        """Unweighted (by ``loss_weight``) loss, or dict of terms, on fp32+ inputs with autocast off."""
        raise NotImplementedError
