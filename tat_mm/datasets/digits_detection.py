"""Digits detection as an mmdet COCO-style dataset (cached PNG + JSON)."""
import functools
from typing import List, Optional, Sequence

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from .digits import DIGIT_CLASSES, DIGIT_PALETTE, ensure_canvas_files


@DATASETS.register_module()
class DigitsDetDataset(CocoDataset):
    """Canvases of handwritten digits with one box per digit (10 classes).

    The canvases are those of ``DigitsSegDataset`` (same ``data_root`` and
    arguments, same files). Each digit has the tight box of its stroke
    pixels and label = the digit (names '0'..'9'). Annotations are COCO json
    files, ``{data_root}/annotations/instances_{split}.json``
    (``category_id`` = digit + 1), so mmdet's ``CocoDataset`` loads them and
    ``CocoMetric`` evaluates against them::

        val_evaluator = dict(
            type='CocoMetric',
            ann_file='data/digits/annotations/instances_val.json',
            metric='bbox')

    The files are written when the dataset is built if missing (the runner
    builds the val dataset before the evaluator), or beforehand by
    ``tools/dataset_converters/make_digits.py``.

    Example:
        >>> dataset = dict(
        ...     type='DigitsDetDataset',
        ...     data_root='data/digits',
        ...     split='val',
        ...     test_mode=True,
        ...     pipeline=[
        ...         dict(type='LoadImageFromFile'),
        ...         dict(type='LoadAnnotations', with_bbox=True),
        ...         dict(type='PackDetInputs'),
        ...     ])

    Args:
        data_root (str): Cache directory of the canvas files, written if
            missing. Defaults to 'data/digits'.
        split (str): 'train', 'val' or 'test' (needs ``num_test`` and
            ``test_fraction``). Defaults to 'train'.
        seed (int): Seed of the digit pools and canvases. Defaults to 0.
        num_train (int): Number of train canvases. Defaults to 400.
        num_val (int): Number of val canvases. Defaults to 100.
        canvas_size (int): Height and width of a canvas. Defaults to 96.
        digit_size (Sequence[int]): (min, max) side of a placed digit.
            Defaults to (24, 40).
        digits_per_canvas (Sequence[int]): (min, max) digits per canvas.
            Defaults to (2, 4).
        threshold (float): Intensity in [0, 1] above which a digit pixel is
            part of the digit (and of its box). Defaults to 0.4.
        noise (int): Maximum background noise, 0..255. Defaults to 16.
        val_fraction (float): Fraction of each digit in the val pool.
            Defaults to 0.2.
        num_test (int): Number of held-out test canvases. Defaults to 0.
        test_fraction (float): Fraction of each digit in the held-out test
            pool. Defaults to 0.0 (no test split).
        ann_file (str, optional): Defaults to None, which means
            ``'annotations/instances_{split}.json'``.
        data_prefix (dict, optional): Defaults to None, which means
            ``dict(img='images/{split}/')``.
        **kwargs: Passed to :class:`mmdet.datasets.CocoDataset`, e.g.
            ``pipeline``, ``test_mode``, ``filter_cfg``.
    """

    METAINFO = dict(classes=DIGIT_CLASSES, palette=DIGIT_PALETTE)

    def __init__(self,
                 data_root: str = 'data/digits',
                 split: str = 'train',
                 seed: int = 0,
                 num_train: int = 400,
                 num_val: int = 100,
                 canvas_size: int = 96,
                 digit_size: Sequence[int] = (24, 40),
                 digits_per_canvas: Sequence[int] = (2, 4),
                 threshold: float = 0.4,
                 noise: int = 16,
                 val_fraction: float = 0.2,
                 num_test: int = 0,
                 test_fraction: float = 0.0,
                 ann_file: Optional[str] = None,
                 data_prefix: Optional[dict] = None,
                 **kwargs):
        if split not in ('train', 'val', 'test'):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if split == 'test' and not num_test:
            raise ValueError("split='test' needs num_test > 0 and test_fraction > 0")
        self.split = split
        # Written when the data is loaded (full_init), not when the dataset is built only for its
        # metainfo (lazy_init=True, as mmdet's init_detector does): building a model writes nothing.
        self._write_canvas_files = functools.partial(
            ensure_canvas_files,
            data_root,
            seed=seed,
            num_train=num_train,
            num_val=num_val,
            canvas_size=canvas_size,
            digit_size=digit_size,
            digits_per_canvas=digits_per_canvas,
            threshold=threshold,
            noise=noise,
            val_fraction=val_fraction,
            num_test=num_test,
            test_fraction=test_fraction)
        if ann_file is None:
            ann_file = f'annotations/instances_{split}.json'
        if data_prefix is None:
            data_prefix = dict(img=f'images/{split}/')
        super().__init__(
            data_root=data_root,
            ann_file=ann_file,
            data_prefix=data_prefix,
            **kwargs)

    def load_data_list(self) -> List[dict]:
        """Write the canvas files if missing, then load the COCO annotations."""
        self._write_canvas_files()
        return super().load_data_list()
