"""Attention transfer (AT; Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017):
match the students' normalised spatial attention maps to the teacher's."""
import torch
import torch.nn as nn
from mmengine.registry import MODELS

from .feature_loss_utils import to_fp32


def attention_map(feat: torch.Tensor, p: float, eps: float = 1e-12) -> torch.Tensor:
    """The L2-normalised attention map ``Q / ||Q||_2`` of ``Q = mean_c |A_c|^p``, as (B, H*W).

    (The mean over channels instead of the paper's sum changes nothing after normalisation and
    lets students and teachers of different widths be compared.)
    """
    q = feat.abs().pow(p).mean(dim=1).flatten(1)
    return q / q.norm(dim=1, keepdim=True).clamp_min(eps)


@MODELS.register_module()
class ATLoss(nn.Module):
    """``mean_{b, j} (Q_S[b, j] / ||Q_S[b]|| - Q_T[b, j] / ||Q_T[b]||)^2``, ``Q = sum_c |A_c|^p``.

    The attention map of a (B, C, H, W) activation is the channel-wise sum of ``|A_c|^p`` (p = 2
    in the paper), flattened to H*W values and L2-normalised per image. The paper writes the loss
    as ``beta / 2 * sum_j || Q_S^j / ||Q_S^j|| - Q_T^j / ||Q_T^j|| ||_p`` over the tapped layers
    j; the authors' code computes, per layer, the *mean squared* difference over batch and
    positions, ``at_loss(x, y) = (at(x) - at(y)).pow(2).mean()``, and adds ``opt.beta *
    sum(loss_groups)`` with ``--beta 1e+3`` (``szagoruyko/attention-transfer``: ``cifar.py`` and
    ``imagenet.py``, README): beta = 1000 per layer, *without* the paper's ``1 / 2``. mdistiller
    (``mdistiller/distillers/AT.py``, ``AT.LOSS.FEAT_WEIGHT = 1000`` in ``engine/cfg.py``, not
    overridden by its ``at.yaml`` configs) and RepDistiller (``-b 1000``) do the same. We follow the
    code: one ATLoss per tapped layer (one distill entry each); ``loss_weight = 1000`` reproduces
    the authors' code and mdistiller, ``500`` the paper's formula (``beta / 2`` with beta = 1000).
    (Until issue 25 this docstring said 500 reproduced the authors' code: it reproduces the paper's
    text, not the code.)

    Student and teacher widths may differ (the maps have one channel); their spatial sizes must
    match (set ``resize=True`` in the distill entry otherwise). No parameters. Computed in fp32
    (autocast off) from fp16/bf16 inputs; the teacher is detached.

    Args:
        p (float): Exponent of the attention map. Defaults to 2.0.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, p: float = 2.0, loss_weight: float = 1.0):
        super().__init__()
        if not p > 0:
            raise ValueError(f'ATLoss: p must be positive, got {p!r}')
        self.p = p
        self.loss_weight = loss_weight

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            student_feat (torch.Tensor): (B, Cs, H, W) student activation.
            teacher_feat (torch.Tensor): (B, Ct, H, W) teacher activation.

        Returns:
            torch.Tensor: scalar loss, already multiplied by ``loss_weight``.
        """
        shapes = f'student {tuple(student_feat.shape)}, teacher {tuple(teacher_feat.shape)}'
        if student_feat.dim() != 4 or teacher_feat.dim() != 4:
            raise ValueError(f'ATLoss: expected 4D (B, C, H, W) activations, got {shapes}')
        if student_feat.shape[0] != teacher_feat.shape[0] or \
                student_feat.shape[2:] != teacher_feat.shape[2:]:
            raise ValueError('ATLoss: student and teacher need the same batch and spatial size, got '
                             f'{shapes}; tap layers of the same stride or set resize=True in the '
                             'distill entry')
        with torch.autocast(device_type=student_feat.device.type, enabled=False):
            q_s = attention_map(to_fp32(student_feat), self.p)
            q_t = attention_map(to_fp32(teacher_feat.detach()), self.p)
            loss = (q_s - q_t).pow(2).mean()
        return loss * self.loss_weight
