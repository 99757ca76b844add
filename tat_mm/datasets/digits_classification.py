"""Digits classification as an mmpretrain dataset (images kept in memory)."""
from typing import List

from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from .digits import DIGIT_CLASSES, build_classification


@DATASETS.register_module()
class DigitsClassificationDataset(BaseDataset):
    """scikit-learn's 1,797 handwritten digits as a 10-class dataset.

    Images are built in memory by
    :func:`tat_mm.datasets.digits.build_classification` (grey uint8 HxWx3,
    white strokes on black) and put in each data info as ``img``, as
    mmpretrain's ``CIFAR10`` and ``MNIST`` do. So, like theirs, the pipeline
    starts without a loading transform: no ``LoadImageFromFile``. The split
    is stratified, with defaults 1,438 train / 359 val images.

    Example:
        >>> dataset = dict(
        ...     type='DigitsClassificationDataset',
        ...     split='train',
        ...     pipeline=[
        ...         dict(type='RandomCrop', crop_size=32, padding=2),
        ...         dict(type='PackInputs'),
        ...     ])

    Args:
        split (str): 'train', 'val' or 'test' (needs ``test_fraction``).
            Defaults to 'train'.
        image_size (int): Height and width of the images. Defaults to 32.
        interpolation (str): Upscaling of the 8x8 digits, 'bilinear' or
            'nearest'. Defaults to 'bilinear'.
        val_fraction (float): Fraction of each digit that goes to val.
            Defaults to 0.2.
        seed (int): Seed of the train/val split. Defaults to 0.
        test_fraction (float): Fraction of each digit held out as the test
            split. Defaults to 0.0 (no test split).
        **kwargs: Passed to :class:`mmpretrain.datasets.BaseDataset`, e.g.
            ``pipeline``, ``test_mode``, ``indices``, ``metainfo``.
    """

    METAINFO = dict(classes=DIGIT_CLASSES)

    def __init__(self,
                 split: str = 'train',
                 image_size: int = 32,
                 interpolation: str = 'bilinear',
                 val_fraction: float = 0.2,
                 seed: int = 0,
                 test_fraction: float = 0.0,
                 **kwargs):
        self.split = split
        self.image_size = image_size
        self.interpolation = interpolation
        self.val_fraction = val_fraction
        self.seed = seed
        self.test_fraction = test_fraction
        # No annotation file nor image folder: the data are built in memory.
        kwargs.setdefault('ann_file', '')
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        """Build the split in memory.

        Returns:
            list[dict]: One ``dict(img=..., gt_label=...)`` per image.
        """
        images, labels = build_classification(
            self.split,
            image_size=self.image_size,
            interpolation=self.interpolation,
            val_fraction=self.val_fraction,
            seed=self.seed,
            test_fraction=self.test_fraction)
        return [
            dict(img=img, gt_label=int(label))
            for img, label in zip(images, labels)
        ]

    def extra_repr(self) -> List[str]:
        """The extra repr information of the dataset."""
        return [
            f'Split: \t{self.split}',
            f'Image size: \t{self.image_size}',
            f'Seed: \t{self.seed}',
        ]
