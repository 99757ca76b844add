"""SoKD's DAM as a wrapper around any feature loss: distil only inside distinctive areas.

Per call::

    s_dam = DAM(BN(conv1x1(student)))           # student mapped to the teacher's width
    t_dam = DAM(teacher.detach())               # same DAM parameters
    loss_dam  = dam_loss_weight * sum_{heatmap, size, offset} MSE(s_dam, t_dam.detach())
    mask      = areas(s_dam | t_dam | union | intersection)   # no gradient
    loss_feat = feature_loss(student, teacher, weight=mask)   # the wrapped loss, its own weight

A wrapped loss with several terms (``HierarchicalTaTLoss``: ``{loss_tat_pg, loss_tat_ap}``) has each
term masked (the anchor-point term with the mask average-pooled like its features) and returned as
``loss_feat_<term>`` (``loss_feat_tat_pg``, ``loss_feat_tat_ap``).

Gradient flow (decided here, following the public code's "match the student's DAM outputs to the
teacher's"): the teacher branch of the DAM is a fixed target and gets no gradient from the DAM loss
(it runs under ``no_grad`` unless ground-truth supervision is on; the teacher feature is always
detached); the DAM loss trains the shared DAM heads and the student adapter through the student
branch, and by default also the student feature (``detach_student_for_dam=False``), which pulls the
student towards areas the teacher finds distinctive. The mask is never differentiated. With
ground-truth boxes (detection), a CenterNet loss on the teacher branch teaches the shared DAM where
the objects are; without them nothing but the matching trains DAM.
"""
import copy
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from ..modules.area_extraction import MASK_MODES, extract_areas
from ..modules.centernet_target import centernet_loss, centernet_targets
from .loss_statistics import SCALAR_TERM, ReportsStatistics

AREA_SOURCES = ('student', 'teacher', 'union', 'intersection', 'all')


@MODELS.register_module()
class DAMDistillLoss(ReportsStatistics, nn.Module):
    """Feature loss restricted to the areas found by SoKD's DAM.

    With ``record_statistics`` on (:mod:`tat_mm.losses.loss_statistics`), ``last_statistics``
    holds, for ``loss_dam``, the fractions of the map covered by the student's and the teacher's
    areas and by both (``dam_area_student``, ``dam_area_teacher``, ``dam_area_overlap``) and by the
    mask the feature loss gets (``dam_area_mask``, not with ``area_source='all'``); and, for the
    ``loss_feat*`` terms, the wrapped loss's own statistics.

    Args:
        feature_loss (dict): Config of the wrapped feature loss (any loss with
            ``forward(student, teacher, weight=None)`` returning a scalar or a dict of named
            scalars). ``student_channels`` and ``teacher_channels`` are filled in when missing.
        dam (dict, optional): Config of the DAM; ``type`` defaults to ``'DAM'`` and ``in_channels``
            to ``teacher_channels`` (it must equal it). Defaults to None (``dict(type='DAM')``).
        student_channels (int): Channels of the student feature.
        teacher_channels (int): Channels of the teacher feature.
        topk (int): Areas per image (peaks over classes and positions, clamped to ``K * H * W``).
            Defaults to 8 (the public SoKD code).
        nms_kernel (int): Max-pool window of the peak NMS. Defaults to 3.
        area_source (str): Whose DAM output defines the mask: ``'student'``, ``'teacher'``,
            ``'union'`` (element-wise max of both masks), ``'intersection'`` (element-wise min) or
            ``'all'`` (a mask of ones: DAM is trained but not used, an ablation). Defaults to
            'student'.
        mask_mode (str): ``'binary'``, ``'sum'`` or ``'score'``, see
            :func:`tat_mm.modules.area_extraction.cells_to_mask`. Defaults to 'binary'.
        score_thr (float, optional): Ignore peaks scoring <= this. Defaults to None.
        dam_loss_weight (float): Weight of the DAM matching loss. Defaults to 1.0.
        gt_loss_weight (float): Weight of the optional CenterNet ground-truth loss. Defaults to 1.0.
        detach_student_for_dam (bool): Stop the DAM loss at the student adapter, so only the
            feature loss trains the student. Defaults to False.
    """

    def __init__(self,
                 feature_loss: dict,
                 dam: Optional[dict] = None,
                 student_channels: int = None,
                 teacher_channels: int = None,
                 topk: int = 8,
                 nms_kernel: int = 3,
                 area_source: str = 'student',
                 mask_mode: str = 'binary',
                 score_thr: Optional[float] = None,
                 dam_loss_weight: float = 1.0,
                 gt_loss_weight: float = 1.0,
                 detach_student_for_dam: bool = False) -> None:
        super().__init__()
        for name, value in (('student_channels', student_channels),
                            ('teacher_channels', teacher_channels), ('topk', topk)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'DAMDistillLoss {name} must be an integer >= 1, got {value!r}')
        if nms_kernel < 1 or nms_kernel % 2 == 0:
            raise ValueError(f'DAMDistillLoss nms_kernel must be a positive odd integer, '
                             f'got {nms_kernel}')
        if area_source not in AREA_SOURCES:
            raise ValueError(f'area_source must be one of {AREA_SOURCES}, got {area_source!r}')
        if mask_mode not in MASK_MODES:
            raise ValueError(f'mask_mode must be one of {MASK_MODES}, got {mask_mode!r}')
        if not isinstance(feature_loss, dict) or 'type' not in feature_loss:
            raise ValueError(f'feature_loss must be a config dict with a type, '
                             f'got {feature_loss!r}')

        feature_loss = copy.deepcopy(feature_loss)
        feature_loss.setdefault('student_channels', student_channels)
        feature_loss.setdefault('teacher_channels', teacher_channels)
        self.feature_loss = MODELS.build(feature_loss)

        dam = dict(type='DAM') if dam is None else copy.deepcopy(dam)
        dam.setdefault('type', 'DAM')
        dam.setdefault('in_channels', teacher_channels)
        if dam['in_channels'] != teacher_channels:
            raise ValueError(f"dam in_channels ({dam['in_channels']}) must equal teacher_channels "
                             f'({teacher_channels}): DAM runs on the teacher width')
        self.dam = MODELS.build(dam)
        # Student -> teacher width, only for the DAM input (the feature loss aligns on its own).
        self.align = nn.Sequential(
            nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
            nn.BatchNorm2d(teacher_channels))

        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.topk = topk
        self.nms_kernel = nms_kernel
        self.area_source = area_source
        self.mask_mode = mask_mode
        self.score_thr = score_thr
        self.dam_loss_weight = dam_loss_weight
        self.gt_loss_weight = gt_loss_weight
        self.detach_student_for_dam = detach_student_for_dam

    def _check_inputs(self, s: Tensor, t: Tensor) -> None:
        if s.dim() != 4 or s.shape[1] != self.student_channels:
            raise ValueError(f'DAMDistillLoss: student feature must be (B, {self.student_channels}'
                             f', H, W), got {tuple(s.shape)}')
        if t.dim() != 4 or t.shape[1] != self.teacher_channels:
            raise ValueError(f'DAMDistillLoss: teacher feature must be (B, {self.teacher_channels}'
                             f', H, W), got {tuple(t.shape)}')
        if s.shape[0] != t.shape[0] or s.shape[-2:] != t.shape[-2:]:
            raise ValueError(f'DAMDistillLoss: student {tuple(s.shape)} and teacher '
                             f'{tuple(t.shape)} differ in batch or spatial size')

    def _areas(self, out: Dict[str, Tensor]) -> Dict[str, Tensor]:
        return extract_areas(out['heatmap'], out['size'], out['offset'], self.topk,
                             self.nms_kernel, self.mask_mode, self.score_thr)

    @torch.no_grad()
    def compute_mask(self, s_dam: Dict[str, Tensor], t_dam: Dict[str, Tensor]) -> Tensor:
        """The (B, 1, H, W) distillation mask from DAM outputs, per ``area_source``."""
        ref = t_dam['heatmap']
        if self.area_source == 'all':
            return torch.ones_like(ref[:, :1], dtype=torch.float32)
        if self.area_source == 'student':
            return self._areas(s_dam)['mask']
        if self.area_source == 'teacher':
            return self._areas(t_dam)['mask']
        ms, mt = self._areas(s_dam)['mask'], self._areas(t_dam)['mask']
        return torch.maximum(ms, mt) if self.area_source == 'union' else torch.minimum(ms, mt)

    def forward(self,
                student_feat: Tensor,
                teacher_feat: Tensor,
                weight: Optional[Tensor] = None,
                gt_boxes: Optional[Sequence[Tensor]] = None,
                gt_labels: Optional[Sequence[Tensor]] = None) -> Dict[str, Tensor]:
        """Masked feature loss and DAM loss.

        Args:
            student_feat (Tensor): (B, student_channels, H, W).
            teacher_feat (Tensor): (B, teacher_channels, H, W).
            weight (Tensor, optional): Extra (B, 1, H, W) weight multiplied into the mask.
                Defaults to None.
            gt_boxes (Sequence[Tensor], optional): Per image (N_i, 4) boxes in *feature-map*
                coordinates, to supervise DAM CenterNet-style. Defaults to None.
            gt_labels (Sequence[Tensor], optional): Per image (N_i,) labels in ``[0, K)``.
                Defaults to None.

        Returns:
            dict[str, Tensor]: ``loss_feat`` (the wrapped loss inside the areas, with its own
            ``loss_weight``; ``loss_feat_<term>`` per term of a dict-valued wrapped loss),
            ``loss_dam`` (weighted) and, with ground truth, ``loss_dam_gt``.
        """
        self._check_inputs(student_feat, teacher_feat)
        if (gt_boxes is None) != (gt_labels is None):
            raise ValueError('gt_boxes and gt_labels must be given together')
        use_gt = gt_boxes is not None

        s_in = self.align(student_feat.detach() if self.detach_student_for_dam else student_feat)
        s_dam = self.dam(s_in)
        t_in = teacher_feat.detach()
        with torch.set_grad_enabled(use_gt and torch.is_grad_enabled()):
            t_dam = self.dam(t_in)

        loss_dam = sum(F.mse_loss(s_dam[key], t_dam[key].detach())
                       for key in ('heatmap', 'size', 'offset'))
        losses = dict(loss_dam=self.dam_loss_weight * loss_dam)
        if use_gt:
            targets = centernet_targets(gt_boxes, gt_labels, self.dam.num_classes,
                                        tuple(teacher_feat.shape[-2:]))
            losses['loss_dam_gt'] = self.gt_loss_weight * sum(
                centernet_loss(t_dam, targets).values())

        mask = self.compute_mask(s_dam, t_dam)
        if self.record_statistics:
            statistics = dict(loss_dam=self._area_statistics(s_dam, t_dam, mask))
        if weight is not None:
            if weight.shape != mask.shape:
                raise ValueError(f'weight must be {tuple(mask.shape)}, got {tuple(weight.shape)}')
            mask = mask * weight.detach()
        mask = mask.to(student_feat.dtype)
        # An empty mask (possible with 'intersection' or score_thr) leaves nothing to distil, and
        # sum(w * d^2) / sum(w) would be 0 / 0 in a loss that does not guard it. Then the loss runs
        # with a mask of ones and is multiplied by 0, which keeps every parameter of the feature
        # loss in the graph (DDP without find_unused_parameters); decided on the device, no sync.
        nonempty = mask.sum() > 0
        # The feature loss detaches the teacher itself (except in DAFA's search passes).
        loss_feat = self.feature_loss(student_feat, teacher_feat,
                                      weight=torch.where(nonempty, mask, torch.ones_like(mask)))
        keep = nonempty.to(mask.dtype)
        if isinstance(loss_feat, dict):
            for name, term in loss_feat.items():
                suffix = name[len('loss_'):] if name.startswith('loss_') else name
                losses[f'loss_feat_{suffix}'] = term * keep
        else:
            losses['loss_feat'] = loss_feat * keep
        if self.record_statistics:
            for term, stats in getattr(self.feature_loss, 'last_statistics', {}).items():
                # the wrapped loss's terms under the names this loss returns them
                suffix = '' if term == SCALAR_TERM else '_' + term[len('loss_'):]
                statistics[f'loss_feat{suffix}'] = stats
            self._keep_statistics(statistics)
        return losses

    @torch.no_grad()
    def _area_statistics(self, s_dam: Dict[str, Tensor], t_dam: Dict[str, Tensor],
                         mask: Tensor) -> Dict[str, Tensor]:
        """Fractions of the map inside the student's, the teacher's and both areas, and inside
        the feature loss's mask."""
        student = self._areas(s_dam)['mask'] > 0
        teacher = self._areas(t_dam)['mask'] > 0
        stats = dict(dam_area_student=student.float().mean(),
                     dam_area_teacher=teacher.float().mean(),
                     dam_area_overlap=(student & teacher).float().mean())
        if self.area_source != 'all':
            stats['dam_area_mask'] = (mask > 0).float().mean()
        return stats
