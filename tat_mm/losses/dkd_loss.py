"""Decoupled knowledge distillation (DKD; Zhao et al., "Decoupled Knowledge Distillation",
CVPR 2022): Hinton KD split into a target-class and a non-target-class term, weighted apart."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

from .feature_loss_utils import to_fp32
from .logit_standardization import standardize_logits


@MODELS.register_module()
class DKDLoss(nn.Module):
    """``alpha * TCKD + beta * NCKD``, each ``T^2 * KL``, summed over classes, averaged over the batch.

    With ``p = softmax(z / T)`` over the K classes and ``t`` the image's ground-truth class:

    * TCKD = ``KL(b^T || b^S)`` on the binary distributions ``b = [p_t, 1 - p_t]`` (target vs all
      non-target classes);
    * NCKD = ``KL(p_hat^T || p_hat^S)`` on ``p_hat = softmax over the K - 1 non-target logits``
      (the target class removed, not merely down-weighted: exact, where the authors' code subtracts
      1000 from the target logit).

    Both terms are multiplied by ``T^2`` and averaged over the batch (paper Eq. 6, authors' code).
    Defaults are the paper's CIFAR-100 setting (alpha 1, beta 8, T 4); ImageNet uses alpha 1,
    beta 0.5, T 1 (paper Sec. 4, the authors' ``imagenet/r34_r18/dkd.yaml``), both with the
    cross-entropy weight 1. The authors also ramp the DKD weight linearly over the first 20 epochs
    on CIFAR (1 on ImageNet, i.e. no ramp); that schedule is not built in: use ImageNet-style
    settings or a smaller ``loss_weight``.

    ``logit_standardization=True`` (Sun et al., CVPR 2024): student and teacher logits are z-scored
    per sample over the classes before the temperature, as in the authors' ``dkd_loss``
    (``sunshangquan/logit-standardization-KD``, ``mdistiller/distillers/DKD.py``: Bessel-corrected
    std plus 1e-7, see :func:`~tat_mm.losses.logit_standardization.standardize_logits`). Their
    CIFAR-100 setting with it (``tools/train.py --logit-stand --base-temp 2 --kd-weight 9``):
    T = 2 and alpha, beta both multiplied by 9 (alpha 9, beta 72 on the ResNet-32x4 -> 8x4 pair),
    cross-entropy weight 1, the 20-epoch ramp kept.

    Labels: the distiller passes them as ``gt_label`` (``ClsDistiller`` does, from the data samples'
    ``gt_label``), only to losses whose ``forward`` takes that argument. Computed in fp32 (autocast
    off) from fp16/bf16 logits; the teacher is detached.

    Args:
        alpha (float): Weight of TCKD. Defaults to 1.0.
        beta (float): Weight of NCKD. Defaults to 8.0.
        temperature (float): Softmax temperature T. Defaults to 4.0.
        loss_weight (float): Multiplier of the whole loss. Defaults to 1.0.
        logit_standardization (bool): z-score each sample's logits over the classes before the
            temperature. Defaults to False (DKD as published).
    """

    def __init__(self,
                 alpha: float = 1.0,
                 beta: float = 8.0,
                 temperature: float = 4.0,
                 loss_weight: float = 1.0,
                 logit_standardization: bool = False):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f'DKDLoss: temperature must be positive, got {temperature!r}')
        if alpha < 0 or beta < 0:
            raise ValueError(f'DKDLoss: alpha and beta must be >= 0, got {alpha!r} / {beta!r}')
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.loss_weight = loss_weight
        self.logit_standardization = bool(logit_standardization)

    def _check_inputs(self, student: torch.Tensor, teacher: torch.Tensor,
                      gt_label: Optional[torch.Tensor]) -> None:
        if student.dim() != 2 or student.shape != teacher.shape:
            raise ValueError('DKDLoss: expected (B, K) student and teacher logits of the same shape, '
                             f'got student {tuple(student.shape)}, teacher {tuple(teacher.shape)}; '
                             'tap the classifier layer (e.g. head.fc)')
        if student.shape[1] < 2:
            raise ValueError(f'DKDLoss: needs at least 2 classes, got {student.shape[1]}')
        if gt_label is None:
            raise ValueError('DKDLoss needs the ground-truth labels (gt_label): use it in a '
                             'ClsDistiller, which passes them, on the classifier logits')
        if gt_label.shape != student.shape[:1] or gt_label.dtype.is_floating_point:
            raise ValueError('DKDLoss: gt_label must be (B,) integer class indices, got '
                             f'{tuple(gt_label.shape)} {gt_label.dtype} for logits '
                             f'{tuple(student.shape)} (soft labels from mixup/cutmix are not '
                             'supported)')
        if bool(((gt_label < 0) | (gt_label >= student.shape[1])).any()):
            raise ValueError(f'DKDLoss: gt_label values must lie in [0, {student.shape[1]}), got '
                             f'{gt_label.tolist()}')

    def forward(self,
                student_logits: torch.Tensor,
                teacher_logits: torch.Tensor,
                gt_label: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            student_logits (torch.Tensor): (B, K) student logits.
            teacher_logits (torch.Tensor): (B, K) teacher logits.
            gt_label (torch.Tensor): (B,) ground-truth class of each image.

        Returns:
            torch.Tensor: scalar loss, already multiplied by ``loss_weight``.
        """
        self._check_inputs(student_logits, teacher_logits, gt_label)
        t = self.temperature
        with torch.autocast(device_type=student_logits.device.type, enabled=False):
            z_s, z_t = to_fp32(student_logits), to_fp32(teacher_logits.detach())
            if self.logit_standardization:
                z_s, z_t = standardize_logits(z_s), standardize_logits(z_t)
            z_s, z_t = z_s / t, z_t / t
            target = F.one_hot(gt_label.long(), z_s.shape[1]).bool()
            tckd = self._binary_kl(z_s, z_t, target)
            # Non-target logits only: (B, K - 1), the target removed from every row.
            batch, classes = z_s.shape
            nt_s = z_s[~target].view(batch, classes - 1)
            nt_t = z_t[~target].view(batch, classes - 1)
            nckd = F.kl_div(F.log_softmax(nt_s, dim=1), F.log_softmax(nt_t, dim=1),
                            reduction='batchmean', log_target=True)
            loss = (self.alpha * tckd + self.beta * nckd) * t * t
        return loss * self.loss_weight

    @staticmethod
    def _binary_kl(z_s: torch.Tensor, z_t: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Batch-mean ``KL([p_t, 1 - p_t]^T || [p_t, 1 - p_t]^S)`` from logits, in log space."""

        def log_binary(z):
            log_all = torch.logsumexp(z, dim=1)
            log_target = z[target] - log_all                       # log p_t
            log_rest = torch.logsumexp(z.masked_fill(target, float('-inf')), dim=1) - log_all
            return torch.stack([log_target, log_rest], dim=1)    # (B, 2) log [p_t, 1 - p_t]

        return F.kl_div(log_binary(z_s), log_binary(z_t), reduction='batchmean', log_target=True)
