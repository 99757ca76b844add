"""ReviewKD (Chen et al., "Distilling Knowledge via Knowledge Review", CVPR 2021): each teacher
stage is matched by a fusion of the student's same stage and all deeper ones (attention based
fusion, ABF), compared by the hierarchical context loss (HCL). The multi-tap loss of tat_mm."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

from .feature_loss_utils import to_fp32


class AttentionBasedFusion(nn.Module):
    """ABF: one student stage, fused with the residual coming from the deeper stages.

    ``x = BN(conv1x1(student))`` (to ``mid_channels``); when ``fuse``, the residual ``y`` is resized
    (nearest) to x's size and ``x = x * a0 + y * a1`` with ``(a0, a1) = sigmoid(conv1x1([x, y]))``
    (two per-position attention maps). Returns ``BN(conv3x3(x))`` at the teacher's width and size
    (the output compared with the teacher) and ``x`` (the residual for the next, shallower stage).

    Args:
        in_channels (int): Student channels of this stage.
        mid_channels (int): Width of the fused residual path.
        out_channels (int): Teacher channels of this stage.
        fuse (bool): Whether a deeper stage's residual is fused in (False for the deepest stage).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False),
                                    nn.BatchNorm2d(mid_channels))
        self.output = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels))
        self.attention = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1),
                                       nn.Sigmoid()) if fuse else None
        # The authors' initialisation of the two convolutions.
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.output[0].weight, a=1)

    def forward(self,
                x: torch.Tensor,
                residual: Optional[torch.Tensor],
                out_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.reduce(x)
        if self.attention is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode='nearest')
            att = self.attention(torch.cat([x, residual], dim=1))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        # The authors' CIFAR variant resizes to the teacher's size when the two differ.
        out = x if tuple(x.shape[-2:]) == tuple(out_size) else F.interpolate(
            x, size=out_size, mode='nearest')
        return self.output(out), x


def hierarchical_context_loss(student: torch.Tensor,
                              teacher: torch.Tensor,
                              pool_sizes: Sequence[int] = (4, 2, 1)) -> torch.Tensor:
    """HCL of one stage: MSE at full size plus MSEs of ``adaptive_avg_pool`` to each ``l x l``.

    Level ``k`` (full size is level 0) weighs ``2^-k``; levels with ``l >= H`` are skipped; the sum
    is divided by the sum of the used weights (the authors' ``hcl``).
    """
    loss = F.mse_loss(student, teacher)
    weight, total = 1.0, 1.0
    for size in pool_sizes:
        if size >= student.shape[2]:
            continue
        weight /= 2.0
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(student, size),
                                          F.adaptive_avg_pool2d(teacher, size))
        total += weight
    return loss / total


@MODELS.register_module()
class ReviewKDLoss(nn.Module):
    """``sum_i HCL(ABF_i(S_i, ..., S_n), T_i)`` over n taps (stages), shallow to deep.

    The loss takes *several* taps: the distill entry lists them,
    ``dict(student=['backbone.layer1', ..., 'backbone.layer4'], teacher=[...same...],
    losses=[dict(type='ReviewKDLoss', student_channels=[...], teacher_channels=[...])])``, and
    the loss receives the lists of student and teacher features in that order (shallowest first).

    Review mechanism (paper Sec. 3.3): starting from the deepest stage, every stage's student
    feature is reduced to ``mid_channels`` and fused by ABF with the residual of all deeper stages;
    the fused map, projected to the teacher's width and size by a 3x3 conv + BN, is compared with
    the teacher feature of that stage by HCL (MSE on the full map and on 4x4, 2x2, 1x1 average
    pools, weights 1, 1/2, 1/4, 1/8, normalised). The deepest stage has no fusion. The terms are
    summed over stages (the authors' ``hcl``).

    Authors' settings: loss weight 1 (with CE weight 1); ImageNet ResNet-34 -> ResNet-18 on the
    four stages plus the pooled feature (channels 64, 128, 256, 512, 512, ``mid_channels`` 512);
    CIFAR loss weight warmed up linearly over 20 epochs (not built in). The fusion width is the
    reference's by default: ``min(512, deepest student width)`` (mdistiller's ``ReviewKD``,
    ``mid_channel = min(512, in_channels[-1])``), one width for every stage. (B, C) inputs (a
    pooled feature, e.g. the ``neck`` output) are used as (B, C, 1, 1) maps. The authors distil pre-ReLU features; tapping mmpretrain's stage outputs
    gives post-ReLU ones.

    Computed in fp32 (autocast off) from fp16/bf16 inputs; teachers are detached.

    Args:
        student_channels (Sequence[int]): Channels of each student tap, shallow to deep.
        teacher_channels (Sequence[int]): Channels of each teacher tap, same order.
        mid_channels (int, optional): Width of the fusion path. Defaults to None:
            ``min(512, student_channels[-1])``, the reference's.
        pool_sizes (Sequence[int]): HCL pooling sizes. Defaults to (4, 2, 1).
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """
    #: Takes lists of features (a multi-tap distill entry); the distiller checks it at build time.
    multi_tap = True

    def __init__(self,
                 student_channels: Sequence[int],
                 teacher_channels: Sequence[int],
                 mid_channels: Optional[int] = None,
                 pool_sizes: Sequence[int] = (4, 2, 1),
                 loss_weight: float = 1.0):
        super().__init__()
        student_channels, teacher_channels = list(student_channels), list(teacher_channels)
        if mid_channels is None and student_channels and isinstance(student_channels[-1], int):
            mid_channels = min(512, student_channels[-1])
        if len(student_channels) < 2 or len(student_channels) != len(teacher_channels):
            raise ValueError('ReviewKDLoss: student_channels and teacher_channels must list the '
                             'channels of each tap (at least 2, equally many), got '
                             f'{student_channels} / {teacher_channels}')
        for value in student_channels + teacher_channels + [mid_channels] + list(pool_sizes):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError('ReviewKDLoss: channels, mid_channels and pool_sizes must be '
                                 f'positive ints, got {value!r}')
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.pool_sizes = tuple(pool_sizes)
        self.loss_weight = loss_weight
        last = len(student_channels) - 1
        self.fusions = nn.ModuleList(
            AttentionBasedFusion(s, mid_channels, t, fuse=i < last)
            for i, (s, t) in enumerate(zip(student_channels, teacher_channels)))

    def _check_inputs(self, student: List[torch.Tensor], teacher: List[torch.Tensor]) -> None:
        if isinstance(student, torch.Tensor) or isinstance(teacher, torch.Tensor):
            raise ValueError('ReviewKDLoss takes several taps: list them in the distill entry, '
                             "student=['backbone.layer1', ...], teacher=[...] (one tap was given)")
        n = len(self.student_channels)
        if len(student) != n or len(teacher) != n:
            raise ValueError(f'ReviewKDLoss: configured for {n} taps, got {len(student)} student '
                             f'and {len(teacher)} teacher features')
        for i, (s, t) in enumerate(zip(student, teacher)):
            shapes = f'tap {i}: student {tuple(s.shape)}, teacher {tuple(t.shape)}'
            if s.dim() != 4 or t.dim() != 4 or s.shape[0] != t.shape[0]:
                raise ValueError(f'ReviewKDLoss: expected (B, C, H, W) or (B, C) features of the '
                                 f'same batch, {shapes}')
            if s.shape[1] != self.student_channels[i] or t.shape[1] != self.teacher_channels[i]:
                raise ValueError(f'ReviewKDLoss: configured for {self.student_channels[i]} student '
                                 f'/ {self.teacher_channels[i]} teacher channels at {shapes}')

    def forward(self, student_feats: List[torch.Tensor],
                teacher_feats: List[torch.Tensor]) -> torch.Tensor:
        """Compute the loss.

        Args:
            student_feats (List[torch.Tensor]): Student features, shallowest first, each
                (B, Cs_i, H_i, W_i) or (B, Cs_i).
            teacher_feats (List[torch.Tensor]): Teacher features, same order.

        Returns:
            torch.Tensor: scalar loss, already multiplied by ``loss_weight``.
        """
        if not isinstance(student_feats, torch.Tensor) and not isinstance(teacher_feats, torch.Tensor):
            student_feats = [f[..., None, None] if f.dim() == 2 else f for f in student_feats]
            teacher_feats = [f[..., None, None] if f.dim() == 2 else f for f in teacher_feats]
        self._check_inputs(student_feats, teacher_feats)
        device = student_feats[0].device.type
        with torch.autocast(device_type=device, enabled=False):
            student_feats = [to_fp32(f) for f in student_feats]
            teacher_feats = [to_fp32(f.detach()) for f in teacher_feats]
            loss, residual = 0.0, None
            for i in reversed(range(len(student_feats))):  # deepest stage first
                out, residual = self.fusions[i](student_feats[i], residual,
                                                tuple(teacher_feats[i].shape[-2:]))
                loss = loss + hierarchical_context_loss(out, teacher_feats[i], self.pool_sizes)
        return loss * self.loss_weight
