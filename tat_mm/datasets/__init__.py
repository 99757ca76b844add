"""Built-in datasets made from scikit-learn's bundled handwritten digits.

The pure-numpy builders in :mod:`tat_mm.datasets.digits` are always
available. Each task's dataset class is imported (and so registered) only if
its library is installed: ``DigitsClassificationDataset`` (mmpretrain),
``DigitsSegDataset`` (mmseg) and ``DigitsDetDataset`` (mmdet).
"""
from importlib.util import find_spec

from .digits import (DIGIT_CLASSES, DIGIT_PALETTE, SEG_CLASSES, SEG_PALETTE,
                     build_canvases, build_classification, canvases_to_coco,
                     encode_png, ensure_canvas_files, load_digits_arrays,
                     split_indices, write_classification_files)

__all__ = [
    'DIGIT_CLASSES', 'DIGIT_PALETTE', 'SEG_CLASSES', 'SEG_PALETTE',
    'build_canvases', 'build_classification', 'canvases_to_coco',
    'encode_png', 'ensure_canvas_files', 'load_digits_arrays',
    'split_indices', 'write_classification_files'
]

# An installed but broken library should fail loudly here, so only the
# presence is checked, not whether the import works.
if find_spec('mmpretrain') is not None:
    from .digits_classification import DigitsClassificationDataset  # noqa
    __all__.append('DigitsClassificationDataset')
if find_spec('mmseg') is not None:
    from .digits_segmentation import DigitsSegDataset  # noqa
    __all__.append('DigitsSegDataset')
if find_spec('mmdet') is not None:
    from .digits_detection import DigitsDetDataset  # noqa
    __all__.append('DigitsDetDataset')
