"""CrossKD: the student's head features run through the teacher's head, distilled to the teacher.

CrossKD (Wang et al., CVPR 2024, "CrossKD: Cross-Head Knowledge Distillation for Object
Detection"; the authors' ``mmdet/models/detectors/crosskd_*.py``). For every FPN level, the
student's classification and regression branch features after ``reused_teacher_head_idx`` head
convs are re-scaled, channel by channel, to the mean and standard deviation of the teacher's
features at the same depth (``align_scale``), pass a ReLU (when the cut is after a conv) and then
the teacher's remaining head convs and output layers (frozen, no update; the gradient flows
through them into the student). These *cross-head* predictions are distilled to the teacher's own
predictions with the paper's losses:

=============  =====================================================  ==========================
head           terms (config key: default)                            reference
=============  =====================================================  ==========================
``RetinaHead``  ``loss_cls_kd``: ``KDQualityFocalLoss`` (beta 1, w 1)  ``crosskd_retinanet.py``
                ``loss_reg_kd``: mmdet ``GIoULoss`` (w 1) on decoded
                boxes, weighted by the teacher's max class score
``GFLHead``     ``loss_cls_kd`` as above; ``loss_reg_kd``:              ``crosskd_gfl.py``
                ``DistributionKLDivLoss`` (T 1, w 3) on the box
                distributions; ``loss_bbox_kd``: ``GIoULoss`` (w 2)
``ATSSHead``    ``loss_cls_kd``, ``loss_reg_kd`` as RetinaNet;          ``crosskd_atss.py``
                ``loss_center_kd``: mmdet ``CrossEntropyLoss``
                (sigmoid, w 1) on the positives' centerness
``FCOSHead``    ``loss_cls_kd``: ``KDQualityFocalLoss`` (w 0.4);        ``crosskd_fcos.py``
                ``loss_reg_kd``: mmdet ``IoULoss`` (w 0.75) on the
                decoded boxes of every point (cut 2 in the paper)
=============  =====================================================  ==========================

The normalisers are the reference's: the positive-anchor count of the student's own targets
(``get_targets`` of its head: it runs a second time, the price of leaving the student's ``loss``
untouched), for GFL's box terms the sum of the weights (clamped at float32's eps, where the
reference would divide by zero when no anchor has weight), for FCOS the positives' summed
centerness targets.

Which features are held: the reference keeps the tensor of the conv + norm output *before* its
activation, but mmcv's ``ConvModule`` applies its ReLU in place on that same tensor, so what it
holds and aligns is the *activated* output. This module reads the input of the next layer (the
activated output), which is the reference's arithmetic; with the cut at 0 it is the FPN level.

Only the student's own head forward runs (its ``loss``, unchanged); the teacher's head is run here
from the teacher's FPN levels, under ``no_grad``.
"""
import contextlib
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet.models.dense_heads import ATSSHead, FCOSHead, GFLHead, RetinaHead
from mmdet.models.utils import images_to_levels, unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures.bbox import cat_boxes, get_box_tensor
from mmdet.utils import reduce_mean
from mmengine.registry import DefaultScope

# The paper's loss settings (the authors' configs crosskd_r50_*_r101_*), by head type.
DEFAULT_LOSSES = {
    'RetinaHead': dict(loss_cls_kd=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0),
                       loss_reg_kd=dict(type='GIoULoss', loss_weight=1.0)),
    'GFLHead': dict(loss_cls_kd=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0),
                    loss_reg_kd=dict(type='DistributionKLDivLoss', temperature=1.0, loss_weight=3.0),
                    loss_bbox_kd=dict(type='GIoULoss', loss_weight=2.0)),
    'ATSSHead': dict(loss_cls_kd=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0),
                     loss_reg_kd=dict(type='GIoULoss', loss_weight=1.0),
                     loss_center_kd=dict(type='CrossEntropyLoss', use_sigmoid=True,
                                         loss_weight=1.0)),
    'FCOSHead': dict(loss_cls_kd=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=0.4),
                     loss_reg_kd=dict(type='IoULoss', loss_weight=0.75)),
}
# The output layers of each head, by branch.
OUTPUT_LAYERS = (
    (GFLHead, 'GFLHead', dict(cls=('gfl_cls',), reg=('gfl_reg',))),
    (ATSSHead, 'ATSSHead', dict(cls=('atss_cls',), reg=('atss_reg', 'atss_centerness'))),
    (RetinaHead, 'RetinaHead', dict(cls=('retina_cls',), reg=('retina_reg',))),
    (FCOSHead, 'FCOSHead', dict(cls=('conv_cls',), reg=('conv_reg',))),
)
SUPPORTED = ', '.join(name for _, name, _ in OUTPUT_LAYERS)


def head_kind(head: nn.Module) -> Optional[str]:
    """The name of the supported head class ``head`` is, or None. Exactly that class: subclasses
    (FSAF's RetinaHead, PAA's ATSSHead, ...) change the outputs or the targets."""
    for cls, name, _ in OUTPUT_LAYERS:
        if type(head) is cls:
            return name
    return None


def align_scale(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """The student feature standardised per channel (over batch and positions), then given the
    teacher's per-channel mean and standard deviation (unbiased std; ``1e-6`` added to the
    student's, as the reference).

    Args:
        student_feat (torch.Tensor): (B, C, H, W) student feature.
        teacher_feat (torch.Tensor): (B, C, H, W) teacher feature (its statistics only).

    Returns:
        torch.Tensor: (B, C, H, W).
    """
    dims = (0, 2, 3)
    s_mean = student_feat.mean(dim=dims, keepdim=True)
    s_std = student_feat.std(dim=dims, keepdim=True)
    t_mean = teacher_feat.mean(dim=dims, keepdim=True)
    t_std = teacher_feat.std(dim=dims, keepdim=True)
    return (student_feat - s_mean) / (s_std + 1e-6) * t_std + t_mean


class _LevelRecorder:
    """Records the first positional input of a module on every call (one call per FPN level)."""

    def __init__(self, module: nn.Module):
        self.values: List[torch.Tensor] = []
        self.active = False
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if self.active:
            self.values.append(args[0])

    def pop(self) -> List[torch.Tensor]:
        values, self.values = self.values, []
        return values


class CrossHeadDistillation(nn.Module):
    """CrossKD's cross-head prediction mimicking between a student and a teacher dense head.

    Built by :class:`~tat_mm.models.DetDistiller` from its ``cross_head`` argument. Both heads must
    be of the same supported type (``RetinaHead``, ``GFLHead``, ``ATSSHead``, ``FCOSHead``), with the same
    classes, anchors / strides and, at the cut, the same width (the student's ``feat_channels``;
    with the cut at 0, the FPN width).

    Args:
        student (nn.Module): The student detector (its ``bbox_head`` is the student head).
        teacher (nn.Module): The teacher detector.
        reused_teacher_head_idx (int): How many of the student's head convs (per branch) run
            before its features enter the teacher's head: 0 feeds the student's FPN levels into the
            whole teacher head; ``stacked_convs`` only the output layers. Defaults to 3 (the
            paper's setting for 4-conv heads).
        **losses (dict): Loss configs by term (``loss_cls_kd``, ``loss_reg_kd``, ``loss_bbox_kd``
            (GFL), ``loss_center_kd`` (ATSS)); a term left out takes the paper's loss for the head
            (see the module docstring), ``None`` switches it off. Built in mmdet's scope, so
            mmdet's losses (``GIoULoss``, ``L1Loss``, ...) and tat_mm's both resolve.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, reused_teacher_head_idx: int = 3,
                 **losses):
        super().__init__()
        s_head, t_head = getattr(student, 'bbox_head', None), getattr(teacher, 'bbox_head', None)
        kind = head_kind(s_head)
        if kind is None:
            raise ValueError(f'cross_head (CrossKD) supports dense heads {SUPPORTED}; the student\'s '
                             f'bbox_head is {type(s_head).__name__}. Remove cross_head or use one of '
                             'those heads.')
        if head_kind(t_head) != kind:
            raise ValueError(f'cross_head (CrossKD) runs the student\'s {kind} features through the '
                             f'teacher\'s head, which must be a {kind} too; it is a '
                             f'{type(t_head).__name__}.')
        self.kind = kind
        self.cut = int(reused_teacher_head_idx)
        self._check_heads(s_head, t_head)
        unknown = set(losses) - set(DEFAULT_LOSSES[kind])
        if unknown:
            raise ValueError(f'cross_head: unknown term(s) {sorted(unknown)} for a {kind}; its terms '
                             f'are {sorted(DEFAULT_LOSSES[kind])}.')
        from ..distill.base_distiller import check_loss_weights
        self.losses = nn.ModuleDict()
        with DefaultScope.overwrite_default_scope('mmdet'):
            for key, default in DEFAULT_LOSSES[kind].items():
                cfg = losses.get(key, default)
                if cfg is None:
                    continue
                check_loss_weights(dict(cfg), f'cross_head.{key}')
                self.losses[key] = MODELS.build(dict(cfg))
        if not len(self.losses):
            raise ValueError('cross_head: every term is switched off (None); keep at least one.')
        # The student's features at the cut, one per level, recorded during its own loss.
        self._recorders = {branch: _LevelRecorder(self._branch_layers(s_head, branch)[self.cut])
                           for branch in ('cls', 'reg')}

    # ------------------------------------------------------------------ building
    def _branch_layers(self, head: nn.Module, branch: str) -> List[nn.Module]:
        """The branch's convs, then its (first) output layer: the cut indexes this list."""
        convs = list(head.cls_convs if branch == 'cls' else head.reg_convs)
        outputs = dict((name, layers) for _, name, layers in OUTPUT_LAYERS)[self.kind][branch]
        return convs + [getattr(head, outputs[0])]

    def _check_heads(self, s_head: nn.Module, t_head: nn.Module) -> None:
        depth = min(len(s_head.cls_convs), len(t_head.cls_convs))
        if not 0 <= self.cut <= depth:
            raise ValueError(f'cross_head: reused_teacher_head_idx={self.cut}, but the heads have '
                             f'{len(s_head.cls_convs)} (student) and {len(t_head.cls_convs)} '
                             f'(teacher) convs per branch; use 0 to {depth}.')
        if len(s_head.cls_convs) != len(s_head.reg_convs) or len(t_head.cls_convs) != len(t_head.reg_convs):
            raise ValueError('cross_head: the heads need as many classification as regression convs.')
        same = [('num_classes', s_head.num_classes, t_head.num_classes),
                ('cls_out_channels', s_head.cls_out_channels, t_head.cls_out_channels),
                ('num_base_priors', getattr(s_head, 'num_base_priors', None),
                 getattr(t_head, 'num_base_priors', None)),
                ('strides', list(s_head.prior_generator.strides), list(t_head.prior_generator.strides))]
        if self.kind == 'GFLHead':
            same.append(('reg_max', s_head.reg_max, t_head.reg_max))
        s_width = s_head.in_channels if self.cut == 0 else s_head.feat_channels
        t_width = t_head.in_channels if self.cut == 0 else t_head.feat_channels
        same.append(('in_channels' if self.cut == 0 else 'feat_channels', s_width, t_width))
        for name, s_value, t_value in same:
            if s_value != t_value:
                raise ValueError(
                    f'cross_head (CrossKD) feeds the student\'s head features into the teacher\'s '
                    f'head, so both heads need the same {name}: student {s_value}, teacher '
                    f'{t_value}. Set the student\'s bbox_head.{name} to {t_value}'
                    + (' (the FPN\'s out_channels too)' if name == 'in_channels' else '') + '.')

    # ------------------------------------------------------------------ forward
    @contextlib.contextmanager
    def recording(self):
        """Inside: the student's features at the cut are recorded (its ``loss`` runs inside)."""
        for recorder in self._recorders.values():
            recorder.values, recorder.active = [], True
        try:
            yield
        finally:
            for recorder in self._recorders.values():
                recorder.active = False

    def _teacher_branch(self, head: nn.Module, branch: str, feat: torch.Tensor, start: int):
        """Run the teacher's branch convs from ``start``; returns (output feature, feature held
        at the cut: the input of layer ``cut``, when ``start`` is 0)."""
        layers = self._branch_layers(head, branch)[:-1]
        held = feat if start == self.cut else None
        for i in range(start, len(layers)):
            feat = layers[i](feat)
            if i + 1 == self.cut:
                held = feat
        return feat, held

    def _predict(self, head: nn.Module, cls_feat: torch.Tensor, reg_feat: torch.Tensor,
                 level: int) -> Dict[str, torch.Tensor]:
        """The output layers of the head (the teacher's), as its ``forward_single``."""
        if self.kind == 'RetinaHead':
            return dict(cls=head.retina_cls(cls_feat), bbox=head.retina_reg(reg_feat))
        if self.kind == 'GFLHead':
            return dict(cls=head.gfl_cls(cls_feat),
                        bbox=head.scales[level](head.gfl_reg(reg_feat)).float())
        if self.kind == 'ATSSHead':
            return dict(cls=head.atss_cls(cls_feat),
                        bbox=head.scales[level](head.atss_reg(reg_feat)).float(),
                        centerness=head.atss_centerness(reg_feat))
        bbox = head.scales[level](head.conv_reg(reg_feat)).float()
        if head.norm_on_bbox:  # distances in strides; the teacher is in eval mode: in pixels
            bbox = bbox.clamp(min=0) * head.strides[level]
        else:
            bbox = bbox.exp()
        return dict(cls=head.conv_cls(cls_feat), bbox=bbox,
                    centerness=head.conv_centerness(reg_feat if head.centerness_on_reg else cls_feat))

    def cross_predictions(self, teacher: nn.Module, teacher_levels: Sequence[torch.Tensor],
                          student_held: Dict[str, List[torch.Tensor]]):
        """The teacher's predictions and the cross-head predictions, level by level.

        Args:
            teacher (nn.Module): The teacher detector.
            teacher_levels (Sequence[torch.Tensor]): The teacher's FPN levels.
            student_held (Dict[str, List[torch.Tensor]]): The student's features at the cut, per
                branch (``cls``, ``reg``) and level.

        Returns:
            tuple: (teacher predictions, cross predictions), each a list (per level) of dicts
            ``{'cls', 'bbox'[, 'centerness']}`` of (B, *, H, W) tensors.
        """
        head = teacher.bbox_head
        dtype = next(head.parameters()).dtype
        teacher_preds, cross_preds = [], []
        for level, t_feat in enumerate(teacher_levels):
            with torch.no_grad():
                t_cls, t_cls_held = self._teacher_branch(head, 'cls', t_feat, 0)
                t_reg, t_reg_held = self._teacher_branch(head, 'reg', t_feat, 0)
                teacher_preds.append({k: v.detach().float()
                                      for k, v in self._predict(head, t_cls, t_reg, level).items()})
            cross = []
            for branch, t_held in (('cls', t_cls_held), ('reg', t_reg_held)):
                # float32 statistics (the held features are float16 under AMP)
                feat = align_scale(student_held[branch][level].float(), t_held.detach().float())
                if self.cut != 0:
                    feat = F.relu(feat)
                cross.append(self._teacher_branch(head, branch, feat.to(dtype), self.cut)[0])
            cross_preds.append({k: v.float() for k, v in self._predict(head, *cross, level).items()})
        return teacher_preds, cross_preds

    def forward(self, student: nn.Module, teacher: nn.Module,
                teacher_levels: Sequence[torch.Tensor], data_samples) -> Dict[str, torch.Tensor]:
        """The CrossKD terms of this step (call after the student's ``loss`` ran in
        :meth:`recording`).

        Args:
            student (nn.Module): The student detector.
            teacher (nn.Module): The teacher detector.
            teacher_levels (Sequence[torch.Tensor]): The teacher's FPN levels of this batch.
            data_samples (list): The batch's data samples (the student's targets are made from
                their ground truth).

        Returns:
            Dict[str, torch.Tensor]: ``{'loss_cls_kd': ..., 'loss_reg_kd': ..., ...}`` (summed
            over levels).
        """
        held = {branch: rec.pop() for branch, rec in self._recorders.items()}
        for branch, values in held.items():
            if len(values) != len(teacher_levels):
                raise RuntimeError(
                    f'cross_head: the student\'s head ran {len(values)} times in its loss ({branch} '
                    f'branch), the teacher has {len(teacher_levels)} FPN levels; the student must '
                    'run its bbox_head once per level, as the dense heads do.')
        teacher_preds, cross_preds = self.cross_predictions(teacher, teacher_levels, held)
        gt_instances, gt_ignore, img_metas = unpack_gt_instances(data_samples)
        head = student.bbox_head
        featmap_sizes = [p['cls'].shape[-2:] for p in teacher_preds]
        device = teacher_preds[0]['cls'].device
        if self.kind == 'FCOSHead':
            return self._fcos_terms(head, teacher_preds, cross_preds, featmap_sizes, gt_instances)
        anchor_list, valid_flag_list = head.get_anchors(featmap_sizes, img_metas, device=device)
        if self.kind == 'RetinaHead':
            return self._anchor_head_terms(head, teacher_preds, cross_preds, anchor_list,
                                           valid_flag_list, gt_instances, img_metas, gt_ignore)
        return self._atss_like_terms(head, teacher_preds, cross_preds, anchor_list,
                                     valid_flag_list, gt_instances, img_metas, gt_ignore)

    # ------------------------------------------------------------------ losses
    @staticmethod
    def _flat(x: torch.Tensor, width: int) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(-1, width)

    def _cls_term(self, head, t_pred, c_pred, label_weights, avg_factor):
        """(``loss_cls_kd`` of one level, or None when it is switched off; the box terms'
        per-anchor weights)."""
        t_cls = self._flat(t_pred['cls'], head.cls_out_channels)
        weights = label_weights.reshape(-1)
        loss = None
        if 'loss_cls_kd' in self.losses:
            c_cls = self._flat(c_pred['cls'], head.cls_out_channels)
            loss = self.losses['loss_cls_kd'](c_cls, t_cls, weight=weights, avg_factor=avg_factor)
        # The box terms weigh each anchor by the teacher's best class score (0 where ignored).
        reg_weights = t_cls.max(dim=1)[0].sigmoid() * (weights != 0)
        return loss, reg_weights

    def _decoded_box_term(self, head, t_pred, c_pred, anchors, reg_weights, avg_factor):
        """``loss_reg_kd`` of one level of an anchor head with a delta coder (RetinaNet, ATSS):
        the cross and the teacher's boxes decoded on the anchors."""
        coder = head.bbox_coder
        t_box = get_box_tensor(coder.decode(anchors, self._flat(t_pred['bbox'], coder.encode_size)))
        c_box = get_box_tensor(coder.decode(anchors, self._flat(c_pred['bbox'], coder.encode_size)))
        return self.losses['loss_reg_kd'](c_box, t_box, weight=reg_weights, avg_factor=avg_factor)

    def _anchor_head_terms(self, head, teacher_preds, cross_preds, anchor_list, valid_flag_list,
                           gt_instances, img_metas, gt_ignore) -> Dict[str, torch.Tensor]:
        labels, label_weights, _, _, avg_factor = head.get_targets(
            anchor_list, valid_flag_list, gt_instances, img_metas,
            batch_gt_instances_ignore=gt_ignore)
        num_level_anchors = [anchors.size(0) for anchors in anchor_list[0]]
        level_anchors = images_to_levels([cat_boxes(a) for a in anchor_list], num_level_anchors)
        terms = {key: 0. for key in self.losses}
        for level, (t_pred, c_pred) in enumerate(zip(teacher_preds, cross_preds)):
            loss_cls, reg_weights = self._cls_term(head, t_pred, c_pred, label_weights[level],
                                                   avg_factor)
            if 'loss_cls_kd' in terms:
                terms['loss_cls_kd'] = terms['loss_cls_kd'] + loss_cls
            if 'loss_reg_kd' in terms:
                anchors = get_box_tensor(level_anchors[level]).reshape(-1, 4)
                terms['loss_reg_kd'] = terms['loss_reg_kd'] + self._decoded_box_term(
                    head, t_pred, c_pred, anchors, reg_weights, avg_factor)
        return terms

    def _atss_like_terms(self, head, teacher_preds, cross_preds, anchor_list, valid_flag_list,
                         gt_instances, img_metas, gt_ignore) -> Dict[str, torch.Tensor]:
        """GFL and ATSS (both assign with ATSS; GFL's boxes are distributions)."""
        (anchor_list, labels, label_weights, _, _, avg_factor) = head.get_targets(
            anchor_list, valid_flag_list, gt_instances, img_metas,
            batch_gt_instances_ignore=gt_ignore)
        device = teacher_preds[0]['cls'].device
        avg_factor = reduce_mean(torch.tensor(avg_factor, dtype=torch.float, device=device)).item()
        terms = {key: 0. for key in self.losses}
        box_weight_sum = 0.
        for level, (t_pred, c_pred) in enumerate(zip(teacher_preds, cross_preds)):
            loss_cls, reg_weights = self._cls_term(head, t_pred, c_pred, label_weights[level],
                                                   avg_factor)
            if 'loss_cls_kd' in terms:
                terms['loss_cls_kd'] = terms['loss_cls_kd'] + loss_cls
            anchors = get_box_tensor(anchor_list[level]).reshape(-1, 4)
            if self.kind == 'GFLHead':
                stride = head.prior_generator.strides[level][0]
                bins = head.reg_max + 1
                if 'loss_reg_kd' in terms:  # KL of the box distributions, 4 sides per anchor
                    terms['loss_reg_kd'] = terms['loss_reg_kd'] + self.losses['loss_reg_kd'](
                        self._flat(c_pred['bbox'], bins), self._flat(t_pred['bbox'], bins),
                        weight=reg_weights[:, None].expand(-1, 4).reshape(-1), avg_factor=4.0)
                if 'loss_bbox_kd' in terms:  # GIoU of the boxes they decode to, in stride units
                    centers = head.anchor_center(anchors) / stride
                    t_box = head.bbox_coder.decode(centers, head.integral(self._flat(t_pred['bbox'], 4 * bins)))
                    c_box = head.bbox_coder.decode(centers, head.integral(self._flat(c_pred['bbox'], 4 * bins)))
                    terms['loss_bbox_kd'] = terms['loss_bbox_kd'] + self.losses['loss_bbox_kd'](
                        c_box, t_box, weight=reg_weights, avg_factor=1.0)
                box_weight_sum = box_weight_sum + reg_weights.sum()
                continue
            if 'loss_reg_kd' in terms:
                terms['loss_reg_kd'] = terms['loss_reg_kd'] + self._decoded_box_term(
                    head, t_pred, c_pred, anchors, reg_weights, avg_factor)
            if 'loss_center_kd' in terms:  # the positives' centerness, towards the teacher's
                level_labels = labels[level].reshape(-1)
                positive = (level_labels >= 0) & (level_labels < head.num_classes)
                c_center = c_pred['centerness'].permute(0, 2, 3, 1).reshape(-1)
                t_center = t_pred['centerness'].permute(0, 2, 3, 1).reshape(-1)
                if bool(positive.any()):
                    term = self.losses['loss_center_kd'](c_center[positive], t_center[positive].sigmoid(),
                                                         avg_factor=avg_factor)
                else:  # keeps the graph (every parameter in it for DDP), value 0
                    term = c_center.sum() * 0
                terms['loss_center_kd'] = terms['loss_center_kd'] + term
        if self.kind == 'GFLHead':
            norm = torch.as_tensor(box_weight_sum, device=device).clamp(min=torch.finfo(torch.float32).eps)
            for key in ('loss_reg_kd', 'loss_bbox_kd'):
                if key in terms:
                    terms[key] = terms[key] / norm
        return terms

    def _fcos_terms(self, head, teacher_preds, cross_preds, featmap_sizes,
                    gt_instances) -> Dict[str, torch.Tensor]:
        """FCOS (anchor-free): all points of all levels at once, as the reference."""
        device = teacher_preds[0]['cls'].device
        points = head.prior_generator.grid_priors(featmap_sizes, dtype=torch.float32, device=device)
        labels, bbox_targets = head.get_targets(points, gt_instances)
        labels, bbox_targets = torch.cat(labels), torch.cat(bbox_targets)
        positive = (labels >= 0) & (labels < head.num_classes)
        centerness_targets = head.centerness_target(bbox_targets[positive])
        denorm = max(reduce_mean(centerness_targets.sum().detach()), 1e-6)
        num_imgs = teacher_preds[0]['cls'].shape[0]
        all_points = torch.cat([p.repeat(num_imgs, 1) for p in points])

        def flat(preds, key, width):
            return torch.cat([self._flat(p[key], width) for p in preds])

        t_cls = flat(teacher_preds, 'cls', head.cls_out_channels)
        terms = {}
        if 'loss_cls_kd' in self.losses:
            terms['loss_cls_kd'] = self.losses['loss_cls_kd'](
                flat(cross_preds, 'cls', head.cls_out_channels), t_cls, avg_factor=denorm)
        if 'loss_reg_kd' in self.losses:
            coder = head.bbox_coder
            t_box = coder.decode(all_points, flat(teacher_preds, 'bbox', 4))
            c_box = coder.decode(all_points, flat(cross_preds, 'bbox', 4))
            terms['loss_reg_kd'] = self.losses['loss_reg_kd'](
                c_box, t_box, weight=t_cls.max(dim=1)[0].sigmoid(), avg_factor=denorm)
        return terms
