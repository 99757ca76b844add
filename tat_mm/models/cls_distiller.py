"""Distiller for mmpretrain image classifiers."""
from mmpretrain.models.classifiers import BaseClassifier
from mmpretrain.registry import MODELS

from ..distill import BaseDistiller


@MODELS.register_module()
class ClsDistiller(BaseDistiller):
    """Distil a frozen mmpretrain teacher classifier into an mmpretrain student classifier.

    Logit KD is a ``KDLoss`` on the classifier-layer tap (``head.fc``); TaT is usually applied to
    the last stage (``backbone`` with ``index=-1``, or ``backbone.layer4``). See
    :class:`tat_mm.distill.BaseDistiller` for the arguments.
    """
    registry = MODELS
    scope = 'mmpretrain'

    def _check_student(self, model, role='student'):
        if not isinstance(model, BaseClassifier):
            raise TypeError(f'ClsDistiller needs an mmpretrain classifier as {role}; got '
                            f'{type(model).__name__}. Use SegDistiller / DetDistiller for other tasks.')
