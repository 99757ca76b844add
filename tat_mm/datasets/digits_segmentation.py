"""Digits semantic segmentation as an mmseg dataset (cached PNG files)."""
import functools
from typing import List, Optional, Sequence

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .digits import SEG_CLASSES, SEG_PALETTE, ensure_canvas_files


@DATASETS.register_module()
class DigitsSegDataset(BaseSegDataset):
    """Canvases of handwritten digits, labelled per pixel (11 classes).

    Class 0 is the background and class ``d + 1`` the strokes of digit ``d``
    (names 'background', '0', ..., '9'). The canvases (defaults: 96x96,
    2-4 digits of 24-40 px, 400 train / 100 val) are built by
    :func:`tat_mm.datasets.digits.build_canvases` and written once as PNG
    files under ``data_root`` (see :func:`~tat_mm.datasets.digits.
    ensure_canvas_files`; ``DigitsDetDataset`` shares them), so the standard
    mmseg pipeline reads them: ``LoadImageFromFile``, ``LoadAnnotations``,
    ..., ``PackSegInputs``. A relative ``data_root`` is relative to the
    working directory, as in every mmseg config.

    Example:
        >>> dataset = dict(
        ...     type='DigitsSegDataset',
        ...     data_root='data/digits',
        ...     split='train',
        ...     pipeline=[
        ...         dict(type='LoadImageFromFile'),
        ...         dict(type='LoadAnnotations'),
        ...         dict(type='PackSegInputs'),
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
            labelled. Defaults to 0.4.
        noise (int): Maximum background noise, 0..255. Defaults to 16.
        val_fraction (float): Fraction of each digit in the val pool.
            Defaults to 0.2.
        num_test (int): Number of held-out test canvases. Defaults to 0.
        test_fraction (float): Fraction of each digit in the held-out test
            pool. Defaults to 0.0 (no test split).
        data_prefix (dict, optional): Image and mask folders under
            ``data_root``. Defaults to None, which means
            ``dict(img_path='images/{split}', seg_map_path='masks/{split}')``.
        **kwargs: Passed to :class:`mmseg.datasets.BaseSegDataset`, e.g.
            ``pipeline``, ``test_mode``, ``indices``.
    """

    METAINFO = dict(classes=SEG_CLASSES, palette=SEG_PALETTE)

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
                 data_prefix: Optional[dict] = None,
                 **kwargs):
        if split not in ('train', 'val', 'test'):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if split == 'test' and not num_test:
            raise ValueError("split='test' needs num_test > 0 and test_fraction > 0")
        self.split = split
        # Written when the data is loaded (full_init), not when the dataset is built only for its
        # metainfo (lazy_init=True): building a model writes nothing.
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
        if data_prefix is None:
            data_prefix = dict(
                img_path=f'images/{split}', seg_map_path=f'masks/{split}')
        super().__init__(
            data_root=data_root,
            data_prefix=data_prefix,
            img_suffix='.png',
            seg_map_suffix='.png',
            **kwargs)

    def load_data_list(self) -> List[dict]:
        """Write the canvas files if missing, then list them."""
        self._write_canvas_files()
        return super().load_data_list()
