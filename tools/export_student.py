"""Export the student of a tat_mm distiller checkpoint as a plain mm* model checkpoint.

The result loads into the plain student model of mmseg / mmdet / mmpretrain with no missing or
unexpected keys (``load_from=...``, ``tools/test.py`` of the upstream library, inference APIs).

    python tools/export_student.py work_dirs/.../iter_40000.pth student.pth
"""
import argparse
from collections import OrderedDict

import torch

import tat_mm  # noqa: F401  (lets torch.load read MMEngine checkpoints on torch >= 2.6)

PREFIX = 'student.'


def export_student(src: str, dst: str) -> int:
    """Write the student's weights of distiller checkpoint ``src`` to ``dst``.

    Args:
        src (str): A checkpoint written by MMEngine while training a tat_mm distiller.
        dst (str): Output path.

    Returns:
        int: The number of tensors written.
    """
    # MMEngine checkpoints hold numpy scalars and a MessageHub state in `meta`: not weights-only.
    ckpt = torch.load(src, map_location='cpu', weights_only=False)
    state = ckpt.get('state_dict', ckpt)
    student = OrderedDict((k[len(PREFIX):], v) for k, v in state.items() if k.startswith(PREFIX))
    if not student:
        raise ValueError(f'{src} has no "{PREFIX}*" weights: it is not a tat_mm distiller checkpoint '
                         f'(its first keys: {list(state)[:5]}).')
    meta = dict(ckpt.get('meta', {}))
    meta.pop('message_hub', None)  # training state, meaningless for the plain model
    meta['exported_from'] = src
    torch.save({'meta': meta, 'state_dict': student}, dst)
    return len(student)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='distiller checkpoint (e.g. work_dirs/.../iter_40000.pth)')
    parser.add_argument('dst', help='output checkpoint for the plain student model')
    args = parser.parse_args()
    n = export_student(args.src, args.dst)
    print(f'Wrote {n} student tensors to {args.dst}')


if __name__ == '__main__':
    main()
