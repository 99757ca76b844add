"""PKD (Cao et al., "PKD: General Distillation Framework for Object Detectors via Pearson
Correlation Coefficient", NeurIPS 2022): MSE between channel-normalised features, i.e. 1 - Pearson
correlation, which ignores the magnitude differences between teacher and student FPN levels."""
from typing import Optional

import torch
from mmengine.registry import MODELS

from .feature_loss_utils import BaseFeatureLoss, weighted_mse


def normalize_per_channel(feat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``(x - mean_c) / (std_c + eps)`` with the statistics of each channel over batch and positions.

    ``std`` is the unbiased standard deviation over the ``B * H * W`` values of the channel, as in
    the authors' code (MMRazor's ``PKDLoss.norm``).
    """
    mean = feat.mean(dim=(0, 2, 3), keepdim=True)
    std = feat.var(dim=(0, 2, 3), keepdim=True, unbiased=True).sqrt()
    return (feat - mean) / (std + eps)


@MODELS.register_module()
class PKDLoss(BaseFeatureLoss):
    """``MSE(norm(S), norm(T)) / 2`` with ``norm`` the per-channel standardisation.

    Each channel is normalised to zero mean and unit variance over the whole batch and all
    positions (the authors' implementation; the paper's Eq. 5: "normalise the features to zero mean
    and unit variance"), then the mean squared error is halved. For one channel of ``n`` values,
    ``MSE / 2 = (1 - r) * (n - 1) / n`` with ``r`` the Pearson correlation, so the loss is the
    correlation distance of the paper. Defaults are the paper's: ``loss_weight`` 6 on Faster
    R-CNN / RetinaNet-R50 students with R101 / X101 teachers (10 for some RetinaNet pairs), on the
    FPN levels P2-P5 (``neck`` indices 0-3).

    Student and teacher need the same number of channels (FPN: 256 both); PKD has no connector.
    A ``(B, 1, H, W)`` ``weight`` restricts the MSE (e.g. to DAM's areas); the normalisation
    statistics always come from the whole map. Computed in fp32 from fp16/bf16 inputs.

    Args:
        student_channels (int): Student channels C (must equal the teacher's).
        teacher_channels (int): Teacher channels C.
        loss_weight (float): Multiplier of the loss. Defaults to 6.0 (the paper's detection
            setting).
    """

    def __init__(self, student_channels: int, teacher_channels: int, loss_weight: float = 6.0):
        super().__init__(student_channels, teacher_channels, loss_weight)
        if student_channels != teacher_channels:
            raise ValueError(f'PKDLoss correlates channel c of the student with channel c of the '
                             f'teacher: student_channels ({student_channels}) must equal '
                             f'teacher_channels ({teacher_channels}). Tap layers of equal width '
                             '(FPN levels) or use a loss with a connector (MGDLoss, FitNetLoss).')

    def check_inputs(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> None:
        super().check_inputs(student_feat, teacher_feat, weight)
        b, _, h, w = student_feat.shape
        if b * h * w < 2:
            raise ValueError(f'PKDLoss: a channel needs at least 2 values (batch x positions) for '
                             f'its standard deviation, got {tuple(student_feat.shape)}')

    def compute_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> torch.Tensor:
        return weighted_mse(normalize_per_channel(student_feat),
                            normalize_per_channel(teacher_feat), weight) / 2
