"""Distiller for mmdet detectors (two-stage and single-stage, with FPN)."""
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmdet.models.detectors import BaseDetector
from mmdet.registry import MODELS
from mmdet.structures.bbox import get_box_tensor

from ..distill import BaseDistiller


@MODELS.register_module()
class DetDistiller(BaseDistiller):
    """Distil a frozen mmdet teacher detector into an mmdet student detector.

    Typical taps are the FPN levels: ``dict(student='neck', teacher='neck', index=[0, 1, 2, 3, 4],
    losses=[...])``. See :class:`tat_mm.distill.BaseDistiller` for the common arguments.

    Args:
        student (dict | str): mmdet detector config or config path.
        teacher (dict): ``dict(config=..., checkpoint=...)``.
        distill (Sequence[dict]): Distillation entries (may be empty with ``cross_head``).
        dam_gt_supervision (bool): Pass the ground-truth boxes (scaled to each tapped feature map)
            and labels to the losses that take them, so ``DAMDistillLoss`` also trains its heatmap
            CenterNet-style on the objects (its ``dam.num_classes`` must be the dataset's number
            of classes). Defaults to False.
        cross_head (dict, optional): CrossKD's cross-head distillation of a dense head
            (``RetinaHead``, ``GFLHead``, ``ATSSHead``, ``FCOSHead``):
            ``dict(reused_teacher_head_idx=3, loss_cls_kd=..., loss_reg_kd=..., ...)``, see
            :class:`~tat_mm.models.cross_head_distillation.CrossHeadDistillation` (terms left
            out take the paper's losses). Its terms are logged as ``loss_crosskd_<term>.bbox_head``
            (``loss_crosskd_cls.bbox_head``, ...). Defaults to None.
        **kwargs: ``teacher_dtype``, ``check_finite``, ``data_preprocessor``, ``init_cfg``.
    """
    registry = MODELS
    scope = 'mmdet'
    #: The tap name that ends the cross-head terms' log keys.
    CROSS_HEAD_TAP = 'bbox_head'

    def __init__(self,
                 student: Union[dict, str],
                 teacher: dict,
                 distill: Sequence[dict] = (),
                 dam_gt_supervision: bool = False,
                 cross_head: Optional[dict] = None,
                 **kwargs):
        # Set first: validate_taps runs a loss step (which reads them) inside the base __init__.
        self.dam_gt_supervision = dam_gt_supervision
        self._cross_head_cfg = None if cross_head is None else dict(cross_head)
        super().__init__(student, teacher, distill, **kwargs)

    def _check_student(self, model, role='student'):
        if not isinstance(model, BaseDetector):
            raise TypeError(f'DetDistiller needs an mmdet detector as {role}; got '
                            f'{type(model).__name__}. Use ClsDistiller / SegDistiller for other tasks.')

    # ------------------------------------------------------------------ CrossKD
    def _build_extra_distillation(self, student_taps: dict, teacher_taps: dict) -> bool:
        self.cross_head = None
        if self._cross_head_cfg is None:
            return False
        from .cross_head_distillation import CrossHeadDistillation
        self.cross_head = CrossHeadDistillation(self.student, self.teacher, **self._cross_head_cfg)
        # The teacher's FPN levels feed its head (run by the cross head): tap each level, so the
        # teacher still stops right after its neck.
        neck = 'neck' if getattr(self.teacher, 'with_neck', False) else 'backbone'
        levels = self.teacher.bbox_head.prior_generator.num_levels
        self._cross_head_taps = [
            self._get_tap(teacher_taps, self.teacher, dict(student=neck, teacher=neck, index=i),
                          'teacher').name
            for i in range(levels)]
        return True

    @property
    def distill_term_taps(self) -> List[str]:
        taps = super().distill_term_taps
        return taps + [self.CROSS_HEAD_TAP] if getattr(self, 'cross_head', None) else taps

    def loss(self, inputs: torch.Tensor, data_samples) -> Dict[str, torch.Tensor]:
        """Student task losses plus every distillation loss (CrossKD's terms included)."""
        if getattr(self, 'cross_head', None) is None:
            return super().loss(inputs, data_samples)
        with self.cross_head.recording():  # the student's head features at the cut
            return super().loss(inputs, data_samples)

    def _extra_distill_losses(self, student_feats, teacher_feats, data_samples):
        if getattr(self, 'cross_head', None) is None:
            return {}
        levels = [teacher_feats[name] for name in self._cross_head_taps]
        terms = self.cross_head(self.student, self.teacher, levels, data_samples)
        return {f'loss_crosskd_{key[len("loss_"):-len("_kd")]}.{self.CROSS_HEAD_TAP}': value
                for key, value in terms.items()}

    def _loss_kwargs(self, student_feat: torch.Tensor, inputs: torch.Tensor,
                     data_samples) -> dict:
        if not self.dam_gt_supervision:
            return {}
        # Boxes are in input pixels (batch_input_shape, before padding offsets: none in mmdet).
        (h, w), (height, width) = student_feat.shape[-2:], inputs.shape[-2:]
        scale = student_feat.new_tensor([w / width, h / height, w / width, h / height])
        boxes = [get_box_tensor(s.gt_instances.bboxes).to(scale) * scale for s in data_samples]
        labels = [s.gt_instances.labels for s in data_samples]
        return dict(gt_boxes=boxes, gt_labels=labels)
