"""Distiller for mmdet detectors (two-stage and single-stage, with FPN)."""
from mmdet.models.detectors import BaseDetector
from mmdet.registry import MODELS

from ..distill import BaseDistiller


@MODELS.register_module()
class DetDistiller(BaseDistiller):
    """Distil a frozen mmdet teacher detector into an mmdet student detector.

    Typical taps are the FPN levels: ``dict(student='neck', teacher='neck', index=[0, 1, 2, 3, 4],
    losses=[...])``. See :class:`tat_mm.distill.BaseDistiller` for the arguments.
    """
    registry = MODELS
    scope = 'mmdet'

    def _check_student(self, model, role='student'):
        if not isinstance(model, BaseDetector):
            raise TypeError(f'DetDistiller needs an mmdet detector as {role}; got '
                            f'{type(model).__name__}. Use ClsDistiller / SegDistiller for other tasks.')
