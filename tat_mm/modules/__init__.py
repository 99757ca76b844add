"""Distillation modules that are not losses (SoKD's DAM): pure torch, registered in ``MODELS``."""
# Each line imports one module file (importing registers it).
from .area_extraction import (cells_to_mask, decode_boxes, extract_areas, local_maximum_mask,
                              topk_peaks)
from .centernet_target import (centernet_loss, centernet_targets, gaussian_focal_loss,
                               gaussian_radius)
from .dam import DAM

__all__ = [
    'DAM', 'cells_to_mask', 'centernet_loss', 'centernet_targets', 'decode_boxes', 'extract_areas',
    'gaussian_focal_loss', 'gaussian_radius', 'local_maximum_mask', 'topk_peaks'
]
# SoKD's DAFA: the feature augmentation operations and the learnable policy.
from .feature_augment_ops import OPERATIONS, apply_operation  # noqa: E402
from .feature_augment_search import FeatureAugmentSearch  # noqa: E402

__all__ += ['FeatureAugmentSearch', 'OPERATIONS', 'apply_operation']
