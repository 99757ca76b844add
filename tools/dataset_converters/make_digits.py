"""Write the built-in digits datasets to disk.

Writes, deterministically, the canvases shared by ``DigitsSegDataset`` and
``DigitsDetDataset`` (PNG images, PNG masks, COCO json) to ``OUT_DIR`` and,
unless ``--no-classification``, the classification split as PNG files with
mmpretrain ``CustomDataset`` annotation lists to ``OUT_DIR/classification``.
The datasets write their files themselves when missing; running this first
is only needed to inspect the data or to prepare a shared, read-only copy.

Example::

    python tools/dataset_converters/make_digits.py data/digits
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for use_venv
import use_venv  # noqa: E402,F401  (re-runs this tool with ./.venv/bin/python if needed)
from tat_mm.datasets.digits import (ensure_canvas_files,
                                    write_classification_files)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Write the built-in digits datasets (classification, '
        'segmentation and detection) to a directory.')
    parser.add_argument(
        'out_dir',
        nargs='?',
        default='data/digits',
        help='output directory (the data_root of the datasets)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=400,
                        help='number of train canvases')
    parser.add_argument('--num-val', type=int, default=100,
                        help='number of val canvases')
    parser.add_argument('--canvas-size', type=int, default=96)
    parser.add_argument('--digit-size', type=int, nargs=2, default=(24, 40),
                        metavar=('MIN', 'MAX'))
    parser.add_argument('--digits-per-canvas', type=int, nargs=2,
                        default=(2, 4), metavar=('MIN', 'MAX'))
    parser.add_argument('--image-size', type=int, default=32,
                        help='side of the classification images')
    parser.add_argument('--no-classification', action='store_true',
                        help='do not write the classification files')
    return parser.parse_args()


def main():
    args = parse_args()
    params = ensure_canvas_files(
        args.out_dir,
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        canvas_size=args.canvas_size,
        digit_size=args.digit_size,
        digits_per_canvas=args.digits_per_canvas)
    print(f'canvases in {args.out_dir}: {json.dumps(params)}')
    if not args.no_classification:
        cls_dir = osp.join(args.out_dir, 'classification')
        write_classification_files(
            cls_dir, image_size=args.image_size, seed=args.seed)
        print(f'classification images in {cls_dir}')


if __name__ == '__main__':
    main()
