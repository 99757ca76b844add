"""DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022): match the
*relations* of the predictions, Pearson correlations across classes and across samples, instead of
the exact probabilities (KL), which a much stronger teacher makes hard to match."""
import torch
import torch.nn as nn
from mmengine.registry import MODELS

from .feature_loss_utils import to_fp32

#: Added to the product of the norms in the cosine, as in the authors' ``cosine_similarity``.
PEARSON_EPS = 1e-8


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = PEARSON_EPS) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``, as (N,).

    The cosine of the mean-centred rows, ``(a_c . b_c) / (|a_c| |b_c| + eps)``: the authors'
    ``pearson_correlation`` (the epsilon on the norms' product, not inside the square roots).

    Args:
        a (torch.Tensor): (N, M).
        b (torch.Tensor): (N, M).
        eps (float): Added to the product of the norms. Defaults to 1e-8.

    Returns:
        torch.Tensor: (N,) correlations in [-1, 1].
    """
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@MODELS.register_module()
class DISTLoss(nn.Module):
    """``tau^2 * (beta * L_inter + gamma * L_intra)`` on ``p = softmax(z / tau)`` over the classes.

    With the (N, K) matrices of student and teacher probabilities (N samples, K classes):

    * inter-class relation, ``L_inter = 1 - mean_n pearson(p_S[n, :], p_T[n, :])``: each sample's
      prediction correlated with the teacher's across the K classes (paper Eq. 6);
    * intra-class relation, ``L_intra = 1 - mean_k pearson(p_S[:, k], p_T[:, k])``: each class's
      column correlated across the N samples of the batch (paper Eq. 7).

    This is the authors' ``DIST`` (``hunto/image_classification_sota``,
    ``lib/models/losses/dist_kd.py``, with its ``tau`` and ``tau^2``), also MMRazor's
    ``DISTLoss``: Pearson as the cosine of centred vectors with ``1e-8`` added to the norms'
    product (see :func:`pearson_rows`).

    **Segmentation** ((B, K, H, W) logits): every pixel is a sample, N = B * H * W, as in the
    authors' segmentation code (``hunto/DIST_KD``, ``segmentation/losses/dist_kd.py``, which
    reshapes the logits to (B * H * W, K)); the intra-class relation correlates each class's
    probability map over all pixels of the batch. The authors apply it to the decoder's logits at
    the head's resolution (weight 1, beta = gamma = 1, no temperature) and to the auxiliary head's
    logits with weight 0.4 (the auxiliary head's cross-entropy weight).

    Defaults (the authors' class): beta = gamma = 1, tau = 1. The papers' settings on top of
    cross-entropy weight 1: ImageNet tau = 1 with the loss weighted 2 (MMRazor's reproduction
    config ``dist_logits_resnet34_resnet18_8xb32_in1k.py``: ``loss_weight=2``, i.e. beta = gamma
    = 2); CIFAR-100 tau = 4 (the authors' ``dist_t4``); Cityscapes tau = 1, weight 1.

    Teacher detached; computed in fp32 (autocast off) from fp16/bf16 logits.

    Args:
        beta (float): Weight of the inter-class relation. Defaults to 1.0.
        gamma (float): Weight of the intra-class relation. Defaults to 1.0.
        tau (float): Softmax temperature. Defaults to 1.0.
        loss_weight (float): Multiplier of the whole loss. Defaults to 1.0.
    """

    def __init__(self,
                 beta: float = 1.0,
                 gamma: float = 1.0,
                 tau: float = 1.0,
                 loss_weight: float = 1.0):
        super().__init__()
        if not tau > 0:
            raise ValueError(f'DISTLoss: tau must be positive, got {tau!r}')
        if not (beta >= 0 and gamma >= 0):
            raise ValueError(f'DISTLoss: beta and gamma must be >= 0, got {beta!r} / {gamma!r}')
        self.beta = beta
        self.gamma = gamma
        self.tau = tau
        self.loss_weight = loss_weight

    def _check_inputs(self, student: torch.Tensor, teacher: torch.Tensor) -> None:
        shapes = f'student {tuple(student.shape)}, teacher {tuple(teacher.shape)}'
        if student.dim() not in (2, 4) or student.shape != teacher.shape:
            raise ValueError('DISTLoss: expected (B, K) or (B, K, H, W) student and teacher logits '
                             f'of the same shape, got {shapes}; tap the classifier (head.fc) or '
                             'the segmentation logits (decode_head.conv_seg)')
        if student.shape[1] < 2:
            raise ValueError(f'DISTLoss: needs at least 2 classes (dim 1), got {shapes}')
        samples = student.numel() // student.shape[1]  # B, or B * H * W pixels
        if self.gamma > 0 and samples < 2:
            raise ValueError('DISTLoss: the intra-class relation correlates each class over the '
                             f'samples of the batch, which needs at least 2 of them, got {shapes}; '
                             'use a batch of 2 or more per GPU, or gamma=0')

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            student_logits (torch.Tensor): (B, K) or (B, K, H, W) student logits.
            teacher_logits (torch.Tensor): teacher logits of the same shape (detached here).

        Returns:
            torch.Tensor: scalar loss, already multiplied by ``loss_weight``.
        """
        self._check_inputs(student_logits, teacher_logits)
        classes = student_logits.shape[1]
        with torch.autocast(device_type=student_logits.device.type, enabled=False):
            z_s = to_fp32(student_logits)
            z_t = to_fp32(teacher_logits.detach())
            if z_s.dim() == 4:  # one sample per pixel: (B * H * W, K)
                z_s = z_s.movedim(1, -1).reshape(-1, classes)
                z_t = z_t.movedim(1, -1).reshape(-1, classes)
            p_s = (z_s / self.tau).softmax(dim=1)
            p_t = (z_t / self.tau).softmax(dim=1)
            inter = 1 - pearson_rows(p_s, p_t).mean()
            intra = 1 - pearson_rows(p_s.t(), p_t.t()).mean()
            loss = self.tau**2 * (self.beta * inter + self.gamma * intra)
        return loss * self.loss_weight
