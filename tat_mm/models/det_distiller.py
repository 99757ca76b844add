"""Distiller for mmdet detectors (two-stage and single-stage, with FPN)."""
from typing import Sequence, Union

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
        distill (Sequence[dict]): Distillation entries.
        dam_gt_supervision (bool): Pass the ground-truth boxes (scaled to each tapped feature map)
            and labels to the losses that take them, so ``DAMDistillLoss`` also trains its heatmap
            CenterNet-style on the objects (its ``dam.num_classes`` must be the dataset's number
            of classes). Defaults to False.
        **kwargs: ``teacher_dtype``, ``check_finite``, ``data_preprocessor``, ``init_cfg``.
    """
    registry = MODELS
    scope = 'mmdet'

    def __init__(self,
                 student: Union[dict, str],
                 teacher: dict,
                 distill: Sequence[dict],
                 dam_gt_supervision: bool = False,
                 **kwargs):
        # Set first: validate_taps runs a loss step (which reads it) inside the base __init__.
        self.dam_gt_supervision = dam_gt_supervision
        super().__init__(student, teacher, distill, **kwargs)

    def _check_student(self, model, role='student'):
        if not isinstance(model, BaseDetector):
            raise TypeError(f'DetDistiller needs an mmdet detector as {role}; got '
                            f'{type(model).__name__}. Use ClsDistiller / SegDistiller for other tasks.')

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
