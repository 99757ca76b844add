"""SoKD's DAFA as a wrapper around any feature loss: distil from an augmented teacher feature.

Per call (training mode)::

    teacher_aug = search(teacher)                     # the step's sampled sub-policy
    loss = feature_loss(student, teacher_aug, ...)    # the wrapped loss, its own loss_weight

The augmentation policy (``search``, a :class:`~tat_mm.modules.FeatureAugmentSearch`) is learnt by
the distiller's bi-level ``train_step`` (``tat_mm/distill/dafa_step.py``) during the first
``search_iters`` iterations, then frozen and only sampled. In eval mode the teacher is not
augmented. The wrapped loss can be any feature loss, DAM included (``DAMDistillLoss`` then finds
its areas on the augmented teacher, as in SoKD's Fig. 2).

Why a wrapper loss and not a ``dafa=`` option of the distill entry: it is the shape users already
know from ``DAMDistillLoss``, it says exactly which loss sees the augmented teacher (an entry may
hold several losses, e.g. TaT with DAFA next to a plain KD), and its log keys say so
(``loss_dafa.<tap>``, or ``loss_dafa_feat`` / ``loss_dafa_dam`` around DAM).
"""
import contextlib
import copy
import inspect
import math
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .feature_loss_utils import teacher_graph_kept
from .loss_statistics import SCALAR_TERM, ReportsStatistics


@MODELS.register_module()
class DAFADistillLoss(ReportsStatistics, nn.Module):
    """A feature loss fed with the DAFA-augmented teacher feature.

    With ``record_statistics`` on (:mod:`tat_mm.losses.loss_statistics`), ``last_statistics``
    holds the wrapped loss's statistics and, on its first term, ``dafa_policy_entropy``: the
    entropy of the sub-policy selection probabilities divided by its maximum ``log(n)`` (1: all
    ``n`` sub-policies equally likely, as at the start; 0: one sub-policy).

    Args:
        feature_loss (dict): Config of the wrapped loss (any loss with
            ``forward(student, teacher, weight=None, ...)``, e.g. ``FitNetLoss``, ``TaTLoss``,
            ``PatchGroupTaTLoss``, ``AnchorPointTaTLoss``, ``DAMDistillLoss``).
            ``student_channels`` and ``teacher_channels`` are filled in when missing.
        search (dict): Config of the search module; ``type`` defaults to
            ``'FeatureAugmentSearch'``, ``search_iters`` is required (see its docstring for the
            operations, ranges, interval and bi-level constants).
        student_channels (int, optional): Channels of the student feature. Defaults to None.
        teacher_channels (int, optional): Channels of the teacher feature. Defaults to None.
    """

    def __init__(self,
                 feature_loss: dict,
                 search: dict,
                 student_channels: Optional[int] = None,
                 teacher_channels: Optional[int] = None) -> None:
        super().__init__()
        if not isinstance(feature_loss, dict) or 'type' not in feature_loss:
            raise ValueError(f'DAFADistillLoss feature_loss must be a config dict with a type, '
                             f'got {feature_loss!r}')
        if feature_loss['type'] in ('DAFADistillLoss', DAFADistillLoss):
            raise ValueError('DAFADistillLoss cannot wrap another DAFADistillLoss: one policy '
                             'per feature.')
        if not isinstance(search, dict) or 'search_iters' not in search:
            raise ValueError('DAFADistillLoss needs search=dict(search_iters=N): the number of '
                             'iterations during which the augmentation policy is learnt (0 keeps '
                             f'the initial random policy); got {search!r}')
        feature_loss = copy.deepcopy(feature_loss)
        for key, value in (('student_channels', student_channels),
                           ('teacher_channels', teacher_channels)):
            if value is not None:
                feature_loss.setdefault(key, value)
        self.feature_loss = MODELS.build(feature_loss)
        search = copy.deepcopy(search)
        search.setdefault('type', 'FeatureAugmentSearch')
        self.search = MODELS.build(search)
        self._accepted = set(inspect.signature(self.feature_loss.forward).parameters)
        # Set by the bi-level step: keep the sum of this loss's terms for the search objective.
        self.record = False
        self.recorded: Optional[Tensor] = None

    def forward(self,
                student_feat: Tensor,
                teacher_feat: Tensor,
                weight: Optional[Tensor] = None,
                gt_boxes: Optional[Sequence[Tensor]] = None,
                gt_labels: Optional[Sequence[Tensor]] = None) -> Union[Tensor, Dict[str, Tensor]]:
        """The wrapped loss on the augmented teacher feature.

        Args:
            student_feat (Tensor): (B, Cs, H, W).
            teacher_feat (Tensor | list[Tensor]): (B, Ct, H, W), detached (a list for a
                multi-tap entry: each map gets the same sampled sub-policy).
            weight (Tensor, optional): (B, 1, H, W) weight map for the wrapped loss.
            gt_boxes, gt_labels (Sequence[Tensor], optional): Passed on to a wrapped loss that
                takes them (DAM's ground-truth supervision in detection).

        Returns:
            Tensor | dict[str, Tensor]: What the wrapped loss returns.
        """
        if isinstance(teacher_feat, (list, tuple)):  # a multi-tap pair: one policy for all taps
            teacher_feat = [self.search(t) for t in teacher_feat]
        else:
            teacher_feat = self.search(teacher_feat)
        extra = dict(weight=weight, gt_boxes=gt_boxes, gt_labels=gt_labels)
        extra = {k: v for k, v in extra.items() if v is not None and k in self._accepted}
        # In the search passes the magnitudes learn through the loss's gradient w.r.t. the teacher.
        keep = teacher_graph_kept() if self.search.magnitude_grad else contextlib.nullcontext()
        with keep:
            out = self.feature_loss(student_feat, teacher_feat, **extra)
        if self.record:
            self.recorded = sum(out.values()) if isinstance(out, dict) else out
        if self.record_statistics:
            statistics = dict(getattr(self.feature_loss, 'last_statistics', {}))
            first = next(iter(out)) if isinstance(out, dict) else SCALAR_TERM
            statistics[first] = dict(statistics.get(first, {}),
                                     dafa_policy_entropy=self.policy_entropy())
            self._keep_statistics(statistics)
        return out

    @torch.no_grad()
    def policy_entropy(self) -> Tensor:
        """Normalised entropy of the sub-policy selection, ``H(softmax(logits)) / log(n)``."""
        log_p = F.log_softmax(self.search.selection_logits.float(), dim=0)
        n = log_p.numel()
        return -(log_p.exp() * log_p).sum() / (math.log(n) if n > 1 else 1.0)
