"""Masked generative distillation (MGD; Yang et al., "Masked Generative Distillation", ECCV 2022):
mask random parts of the student feature and make a small block generate the teacher's feature."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.registry import MODELS

from .feature_loss_utils import BaseFeatureLoss

MASK_TYPES = ('spatial', 'channel')


@MODELS.register_module()
class MGDLoss(BaseFeatureLoss):
    """``loss_weight / B * sum (G(M * align(S)) - T)^2`` (paper Eq. 2-4, ``loss_weight`` = alpha).

    * ``align``: a 1x1 convolution (with bias) from the student's to the teacher's width, only when
      they differ (identity otherwise), as in the authors' code.
    * ``M``: a fresh random binary mask each call, drawn from the global torch RNG.
      ``mask_type='spatial'`` (detection, segmentation): one (B, 1, H, W) mask, each position
      zeroed with probability ``lambda_mgd``. ``'channel'`` (the authors' classification code):
      one (B, C, 1, 1) mask, each teacher-width channel zeroed with probability ``lambda_mgd``.
      With ``u = torch.rand(...)``, a position is *kept* when ``u >= lambda_mgd``; the authors'
      code (``yzd-v/MGD``, and MMRazor's ``MGDLoss``) keeps it when ``u <= 1 - lambda_mgd``
      (``torch.where(u > 1 - lambda_mgd, 0, 1)``). Both keep with probability
      ``1 - lambda_mgd``: the same distribution, but not the same mask for the same seed (ours on
      a draw ``u`` is theirs on ``1 - u``), so seeded runs of the two draw different masks.
    * ``G``, the generation block (the paper's "simple block"): Conv3x3 -> ReLU -> Conv3x3, both
      teacher width with bias, trained with the student and discarded after training.
    * The squared error is *summed* over channels and positions and divided by the batch size
      only (the authors' ``MSELoss(reduction='sum') / N``), hence the small alphas.

    The authors' settings: detection ``loss_weight`` (alpha) 2e-5, ``lambda_mgd`` 0.65 on FPN
    levels (RetinaNet, SOLO, RepPoints; 5e-7 / 0.45 for Faster / Mask R-CNN with a Cascade
    X101 teacher); segmentation 2e-5 / 0.75 on the last backbone stage; ImageNet classification
    7e-5 / 0.15 with ``mask_type='channel'`` on the last stage. The defaults are the detection
    ones.

    A ``(B, 1, H, W)`` ``weight`` multiplies the squared error per position (e.g. DAM's areas;
    the sum is still divided by B). Computed in fp32 from fp16/bf16 inputs.

    Args:
        student_channels (int): Student channels Cs.
        teacher_channels (int): Teacher channels Ct.
        lambda_mgd (float): Probability of masking a position (or channel), in [0, 1).
            Defaults to 0.65.
        mask_type (str): ``'spatial'`` or ``'channel'``. Defaults to 'spatial'.
        loss_weight (float): alpha_mgd. Defaults to 2e-5.
    """

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 lambda_mgd: float = 0.65,
                 mask_type: str = 'spatial',
                 loss_weight: float = 2e-5):
        super().__init__(student_channels, teacher_channels, loss_weight)
        if not 0 <= lambda_mgd < 1:
            raise ValueError(f'MGDLoss: lambda_mgd is the masked fraction, in [0, 1); got {lambda_mgd!r}')
        if mask_type not in MASK_TYPES:
            raise ValueError(f'MGDLoss: mask_type must be one of {MASK_TYPES}, got {mask_type!r}')
        self.lambda_mgd = lambda_mgd
        self.mask_type = mask_type
        self.align = (nn.Conv2d(student_channels, teacher_channels, 1)
                      if student_channels != teacher_channels else nn.Identity())
        self.generation = nn.Sequential(
            nn.Conv2d(teacher_channels, teacher_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(teacher_channels, teacher_channels, 3, padding=1))

    def random_mask(self, feat: torch.Tensor) -> torch.Tensor:
        """A fresh binary keep-mask for ``feat`` (B, Ct, H, W): 0 where masked, 1 where kept.

        Drawn in fp32 from the global RNG (``torch.rand``) so a seed reproduces it in any dtype.
        """
        b, c, h, w = feat.shape
        shape = (b, 1, h, w) if self.mask_type == 'spatial' else (b, c, 1, 1)
        rand = torch.rand(shape, device=feat.device)
        return (rand >= self.lambda_mgd).to(feat.dtype)

    def compute_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> torch.Tensor:
        aligned = self.align(student_feat)
        generated = self.generation(aligned * self.random_mask(aligned))
        sq_diff = (generated - teacher_feat).pow(2)
        if weight is not None:
            sq_diff = sq_diff * weight
        return sq_diff.sum() / student_feat.shape[0]
