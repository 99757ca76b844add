"""Distiller for mmpretrain image classifiers."""
import torch
from mmpretrain.models.classifiers import BaseClassifier
from mmpretrain.registry import MODELS

from ..distill import BaseDistiller


@MODELS.register_module()
class ClsDistiller(BaseDistiller):
    """Distil a frozen mmpretrain teacher classifier into an mmpretrain student classifier.

    Logit KD is a ``KDLoss`` (or ``DKDLoss``) on the classifier-layer tap (``head.fc``); TaT is
    usually applied to the last stage (``backbone`` with ``index=-1``, or ``backbone.layer4``).
    Losses whose ``forward`` takes ``gt_label`` (``DKDLoss``) get the batch's ground-truth classes,
    a (B,) tensor from the data samples' ``gt_label`` (one class per image: soft mixup / cutmix
    labels are not passed). See :class:`tat_mm.distill.BaseDistiller` for the arguments.
    """
    registry = MODELS
    scope = 'mmpretrain'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._pass_gt_label and getattr(self.data_preprocessor, 'batch_augments', None):
            # mmpretrain keeps the unmixed gt_label next to the mixed gt_score: it would be wrong.
            raise ValueError('ClsDistiller: a distillation loss takes gt_label (e.g. DKDLoss), which '
                             'needs one hard label per image, but the data preprocessor mixes '
                             'images (batch_augments: Mixup / CutMix). Remove batch_augments from '
                             'the data_preprocessor for this run.')

    @property
    def _pass_gt_label(self) -> bool:
        """Whether some loss takes ``gt_label`` (labels are gathered only then). A property, not
        an attribute set after ``BaseDistiller.__init__``: ``validate_taps=True`` runs a step
        inside that ``__init__``."""
        return any('gt_label' in params for pair in self.pairs for params in pair._loss_params)

    def _check_student(self, model, role='student'):
        if not isinstance(model, BaseClassifier):
            raise TypeError(f'ClsDistiller needs an mmpretrain classifier as {role}; got '
                            f'{type(model).__name__}. Use SegDistiller / DetDistiller for other tasks.')

    def _loss_kwargs(self, student_feat: torch.Tensor, inputs: torch.Tensor, data_samples) -> dict:
        if not self._pass_gt_label:
            return {}
        labels = []
        for i, sample in enumerate(data_samples or []):
            label = sample.get('gt_label') if hasattr(sample, 'get') else None
            if label is None or label.numel() != 1:
                raise ValueError(
                    f'ClsDistiller: a distillation loss takes gt_label (e.g. DKDLoss), but data '
                    f'sample {i} has gt_label={label!r}; it needs exactly one class per image '
                    '(single-label data, no mixup / cutmix batch augments).')
            labels.append(label.reshape(()))
        if not labels:
            raise ValueError('ClsDistiller: a distillation loss takes gt_label (e.g. DKDLoss) but '
                             'the batch has no data samples.')
        return dict(gt_label=torch.stack(labels).to(student_feat.device))
