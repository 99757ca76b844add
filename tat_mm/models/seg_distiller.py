"""Distiller for mmsegmentation segmentors (any ``EncoderDecoder``, DeepLabV3+ first)."""
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS

from ..distill import BaseDistiller


@MODELS.register_module()
class SegDistiller(BaseDistiller):
    """Distil a frozen mmseg teacher segmentor into an mmseg student segmentor.

    ``loss`` returns the student's decode/auxiliary losses plus the distillation terms;
    ``predict`` and ``tensor`` are the student's, so mmseg's ``IoUMetric``, test loop and
    ``inference_model`` work unchanged. Pixel-wise KD is a ``KDLoss`` on the classifier
    (``decode_head.conv_seg``) tap. See :class:`tat_mm.distill.BaseDistiller` for the arguments.
    """
    registry = MODELS
    scope = 'mmseg'

    def _check_student(self, model, role='student'):
        if not isinstance(model, BaseSegmentor):
            raise TypeError(f'SegDistiller needs an mmseg segmentor as {role}; got '
                            f'{type(model).__name__}. Use ClsDistiller / DetDistiller for other tasks.')
