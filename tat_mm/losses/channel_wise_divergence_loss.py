"""Channel-wise distillation (CWD; Shu et al., "Channel-wise Knowledge Distillation for Dense
Prediction", ICCV 2021): every channel becomes a distribution over the spatial positions."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

from .feature_loss_utils import to_fp32


@MODELS.register_module()
class ChannelWiseDivergenceLoss(nn.Module):
    """``T^2 / (N * C) * sum_{n, c} KL(softmax_HW(t_nc / T) || softmax_HW(s_nc / T))``.

    Each of the ``N * C`` channel maps (H * W positions) is turned into a probability map by a
    softmax over its positions with temperature T; the KL divergence from the teacher's map to the
    student's is summed over positions and averaged over batch and channels (the paper's Eq. 3 with
    the authors' ``/ (N * C)`` normalisation), times ``T^2`` as in Hinton KD.

    Where it applies (a decision of the paper, kept here): dense *logits* (segmentation
    ``decode_head.conv_seg``, channels = classes, no parameters) or *feature maps* (FPN levels,
    decoder features). When ``student_channels != teacher_channels`` a 1x1 convolution (with bias,
    as the paper's "1x1 conv to upsample the number of channels") maps the student to the
    teacher's width; otherwise the maps are compared directly.

    Settings the authors' code and reproductions use (the paper has no single default): logits
    T = 4, loss weight 3 (the CWD authors' Cityscapes PSPNet run, ``irfanICMLL/TorchDistiller``
    ``SemSeg-distill``: ``bash exp_cwd.sh channel kl 3 4 ...``, i.e. ``--lambda-cwd 3
    --temperature 4``; MGD's segmentation code uses the same criterion); MMRazor's reproduction of
    PSPNet R101 -> R18 on Cityscapes uses T = 1, weight **5**
    (``configs/distill/mmseg/cwd/cwd_logits_pspnet_r101_d8_pspnet_r18_d8_512x1024_cityscapes_80k.py``;
    MMRazor's *MGD* segmentation config adds a CWD term with T = 1, weight 3); FPN features T = 1,
    weight 10 on each level (MMRazor's ``cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py``, inherited by
    ``cwd_fpn_retina_r101_retina_r50_1x_coco.py``). (Until issue 25 this docstring gave MMRazor's
    PSPNet weight as 3.) All of them normalise like this loss: KL summed over positions, times
    ``T^2``, divided by ``N * C``.

    Computed in fp32 (autocast off) from fp16/bf16 inputs; the teacher is detached.

    Args:
        tau (float): Temperature T. Defaults to 1.0.
        loss_weight (float): Multiplier of the loss (the paper's alpha). Defaults to 1.0.
        student_channels (int, optional): Student channels; checked at forward when given.
            Defaults to None.
        teacher_channels (int, optional): Teacher channels; checked at forward when given.
            Defaults to None.
    """

    def __init__(self,
                 tau: float = 1.0,
                 loss_weight: float = 1.0,
                 student_channels: Optional[int] = None,
                 teacher_channels: Optional[int] = None):
        super().__init__()
        if not tau > 0:
            raise ValueError(f'ChannelWiseDivergenceLoss: tau must be positive, got {tau!r}')
        for name, value in (('student_channels', student_channels),
                            ('teacher_channels', teacher_channels)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ValueError(f'ChannelWiseDivergenceLoss: {name} must be a positive int or '
                                 f'None, got {value!r}')
        if (student_channels is None) != (teacher_channels is None):
            raise ValueError('ChannelWiseDivergenceLoss: give both student_channels and '
                             'teacher_channels (they choose the 1x1 connector) or neither, got '
                             f'{student_channels!r} / {teacher_channels!r}')
        self.tau = tau
        self.loss_weight = loss_weight
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.connector = (nn.Conv2d(student_channels, teacher_channels, 1)
                          if student_channels != teacher_channels else nn.Identity())

    def _check_inputs(self, student: torch.Tensor, teacher: torch.Tensor) -> None:
        shapes = f'student {tuple(student.shape)}, teacher {tuple(teacher.shape)}'
        if student.dim() != 4 or teacher.dim() != 4:
            raise ValueError(f'ChannelWiseDivergenceLoss: expected 4D (B, C, H, W) maps, got {shapes}')
        if student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
            raise ValueError('ChannelWiseDivergenceLoss: student and teacher need the same batch and '
                             f'spatial size, got {shapes} (set resize=True in the distill entry)')
        if self.student_channels is None:
            if student.shape[1] != teacher.shape[1]:
                raise ValueError('ChannelWiseDivergenceLoss: channels differ, got '
                                 f'{shapes}; set student_channels / teacher_channels to add a 1x1 '
                                 'connector')
        elif student.shape[1] != self.student_channels or teacher.shape[1] != self.teacher_channels:
            raise ValueError(f'ChannelWiseDivergenceLoss: configured for {self.student_channels} '
                             f'student / {self.teacher_channels} teacher channels, got {shapes}')

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            student_feat (torch.Tensor): (B, Cs, H, W) student logits or feature.
            teacher_feat (torch.Tensor): (B, Ct, H, W) teacher logits or feature.

        Returns:
            torch.Tensor: scalar loss, already multiplied by ``loss_weight``.
        """
        self._check_inputs(student_feat, teacher_feat)
        student_feat = to_fp32(student_feat)
        teacher_feat = to_fp32(teacher_feat.detach())
        with torch.autocast(device_type=student_feat.device.type, enabled=False):
            student_feat = self.connector(student_feat)
            batch, channels = teacher_feat.shape[:2]
            # One distribution over the H*W positions per (image, channel).
            log_p_s = F.log_softmax(student_feat.flatten(2) / self.tau, dim=2)
            log_p_t = F.log_softmax(teacher_feat.flatten(2) / self.tau, dim=2)
            kl = F.kl_div(log_p_s, log_p_t, reduction='sum', log_target=True)
            loss = kl * self.tau**2 / (batch * channels)
        return loss * self.loss_weight
