"""Hinton knowledge distillation on logits (the L_KL term of TaT's Eq. 9)."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

from .feature_loss_utils import to_fp32
from .logit_standardization import standardize_logits


@MODELS.register_module()
class KDLoss(nn.Module):
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, summed over classes and averaged over the batch.

    Pixel-wise for dense logits: (B, K, H, W) inputs are treated as B*H*W distributions over the K
    classes (dim 1), and the KL is averaged over all of them (batchmean over pixels). MMRazor's
    ``KLDivergence`` with ``reduction='batchmean'`` on the same (B, K, H, W) logits divides the
    sum by B only, i.e. it is ``H * W`` times this loss (docs/baselines.md); mdistiller and the
    authors' CIFAR / ImageNet code use (B, K) logits, where the two agree.

    ``logit_standardization=True`` (Sun et al., "Logit Standardization in Knowledge
    Distillation", CVPR 2024): the logits of each sample (each pixel for dense logits) are
    z-scored over the classes before the temperature, ``softmax((z - mean) / (1e-7 + std) / T)``
    for student and teacher alike, with the Bessel-corrected std and the epsilon of the authors'
    ``normalize`` (``sunshangquan/logit-standardization-KD``, ``mdistiller/distillers/KD.py``; see
    :func:`~tat_mm.losses.logit_standardization.standardize_logits`). The authors' CIFAR-100
    setting with it: T = 2 (the "base temperature"; 3 for some pairs), KD weight 9 next to
    cross-entropy weight 1 (their ``tools/train.py --logit-stand --base-temp 2 --kd-weight 9``).

    Computed in fp32 (autocast off) from fp16/bf16 logits; the teacher is detached.

    Args:
        temperature (float): softmax temperature T. Defaults to 1.0.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
        logit_standardization (bool): z-score each sample's logits over the classes before the
            temperature. Defaults to False (Hinton KD).
    """

    def __init__(self,
                 temperature: float = 1.0,
                 loss_weight: float = 1.0,
                 logit_standardization: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'KDLoss: temperature must be positive, got {temperature!r}')
        self.temperature = temperature
        self.loss_weight = loss_weight
        self.logit_standardization = bool(logit_standardization)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            student_logits (torch.Tensor): (B, K) or (B, K, H, W) student logits.
            teacher_logits (torch.Tensor): teacher logits of the same shape.

        Returns:
            torch.Tensor: scalar loss, already multiplied by ``loss_weight``.
        """
        if student_logits.dim() not in (2, 4) or student_logits.shape != teacher_logits.shape:
            raise ValueError('KDLoss: expected (B, K) or (B, K, H, W) student and teacher logits of the '
                             f'same shape, got student {tuple(student_logits.shape)}, teacher '
                             f'{tuple(teacher_logits.shape)}')
        if student_logits.dim() == 4:  # one distribution per pixel: (B*H*W, K)
            num_classes = student_logits.shape[1]
            student_logits = student_logits.movedim(1, -1).reshape(-1, num_classes)
            teacher_logits = teacher_logits.movedim(1, -1).reshape(-1, num_classes)
        t = self.temperature
        with torch.autocast(device_type=student_logits.device.type, enabled=False):
            z_s, z_t = to_fp32(student_logits), to_fp32(teacher_logits.detach())
            if self.logit_standardization:
                z_s, z_t = standardize_logits(z_s), standardize_logits(z_t)
            log_p_s = F.log_softmax(z_s / t, dim=1)
            log_p_t = F.log_softmax(z_t / t, dim=1)
            loss = F.kl_div(log_p_s, log_p_t, reduction='batchmean', log_target=True) * t * t
        return loss * self.loss_weight
