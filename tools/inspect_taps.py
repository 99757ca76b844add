"""List the modules a distiller config can tap, with shapes, channels and strides, and check its taps.

    python tools/inspect_taps.py CONFIG [--shape H W] [--depth 3] [--grep PATTERN] [--all]
                                        [--cfg-options k=v ...]

Builds the student and the teacher of CONFIG (the teacher with random weights: its checkpoint
need not exist yet), runs one fake batch (the image size of the train dataloader's pipeline, or
--shape) through the student in ``loss`` mode and the teacher in the distiller's
``teacher_mode``, as the distiller runs them, and prints for each module its output shape,
channels and stride (and which modules did not run, failed, or were not reached after a failure),
then student-teacher pairs of the same stride whose shapes can be distilled, as ready-to-edit
distill entries. If the config has distill entries, they are checked
as ``validate_taps=True`` does (channels, sizes, patch sizes), every problem at once. Works for a
plain model config too (one model listed).
"""
import use_venv  # noqa: F401,I001  (first: re-runs this tool with ./.venv/bin/python if needed)
import argparse
import os.path as osp
import re
import tempfile

import torch
from mmengine.config import Config, DictAction

import tat_mm  # noqa: F401  (stack fixes + registries)
from tat_mm.cfg_options import check_cfg_options
from tat_mm.distill.tap_inspection import (build_config_models, check_distill_taps, entry_for_pair,
                                           format_stride, input_size_from_config, inspect_model,
                                           is_listed, suggest_pairs)
from tat_mm.distill.teacher_mode import needs_data_samples


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='distiller (or plain model) config file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='image size of the fake batch (default: from the train pipeline)')
    parser.add_argument('--depth', type=int, default=3,
                        help='list modules at most this many path parts deep (default 3)')
    parser.add_argument('--grep', help='list only the module paths that match this regex')
    parser.add_argument('--all', action='store_true',
                        help='also list norms, activations, dropouts and modules that did not run')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config (key=value pairs)')
    return parser.parse_args()


def print_model(title, model, scope, size, mode, args, why='', result=None):
    result = result or inspect_model(model, scope, size, mode)
    candidates = result.candidates
    pattern = re.compile(args.grep) if args.grep else None
    shown = [c for c in candidates
             if (args.all or is_listed(c, args.depth)) and (not pattern or pattern.search(c.name))]
    print(f'\n{title}: {type(model).__name__}, {mode} mode{why}, input {size[0]}x{size[1]} '
          f'(preprocessed: {"x".join(map(str, candidates[0].input_size)) if candidates else "?"})')
    if result.error:
        where = (f' in {result.failed[-1]} ({type(model.get_submodule(result.failed[-1])).__name__})'
                 if result.failed else '')
        print(f'  ! the {mode} pass failed{where}: {result.error}')
    width = max([len(c.name) for c in shown] + [6])
    print(f'  {"module":<{width}}  {"type":<24} {"output":<28} {"ch":>5} {"stride":>6}  note')
    for c in shown:
        note = f'called {c.calls}x: a tap keeps the last call' if c.calls > 1 else ''
        print(f'  {c.name:<{width}}  {c.module_type[:24]:<24} {c.describe()[:28]:<28} '
              f'{c.channels if c.channels is not None else "-":>5} {format_stride(c.stride):>6}  '
              f'{note}')

    def select(paths):
        return [p for p in paths if p.count('.') < args.depth and (not pattern or pattern.search(p))]

    skipped = select(result.not_run)
    ran = {c.path for c in candidates}
    indirect = [p for p in skipped if any(r.startswith(p + '.') for r in ran)]
    for label, paths in ((f'not run in {mode} mode (cannot be tapped)',
                          [p for p in skipped if p not in indirect]),
                         ('run, but not through their forward() call, so a tap on them records '
                          'nothing (tap one of their layers)', indirect),
                         ('failed (the failing module and its parents)', select(result.failed)),
                         ('not reached before the failure (unknown until it is fixed)',
                          select(result.not_reached))):
        if paths:
            listed = paths if args.all else paths[:12]
            more = '' if len(listed) == len(paths) else f' ... ({len(paths)} in all, --all lists them)'
            print(f'  {label}: {", ".join(listed)}{more}')
    return candidates


def teacher_listing_mode(cfg, teacher, scope, size):
    """The mode to list the teacher in, why, and the tensor pass if it was made: the config's
    ``teacher_mode``; for 'auto' (the default), 'tensor' unless the teacher fails there for want
    of data samples (then 'predict', as 'auto' picks when a tap is in such a head)."""
    mode = cfg.model.get('teacher_mode', 'auto')
    if mode != 'auto':
        return mode, '', None
    result = inspect_model(teacher, scope, size, 'tensor')
    if result.error and 'required positional argument' in result.error:
        # The failing head is often called through .forward() (mmseg): look for it by signature.
        head = next((f'{p} ({type(m).__name__})' for p, m in teacher.named_modules()
                     if p and needs_data_samples(m)), 'a head')
        return 'predict', (f" (teacher_mode='auto': tensor mode fails in {head}, which needs the "
                           'data samples; taps there run the teacher in predict mode)'), None
    return 'tensor', '', result


def check_config_taps(cfg, models, size):
    """Build the distiller with a random-weight teacher checkpoint and report its tap problems."""
    distill = cfg.model.get('distill')
    print(f'\nChecking the {len(distill)} distill entries of the config '
          f'({size[0]}x{size[1]} fake batch):')
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = osp.join(tmp, 'random_teacher.pth')
        torch.save({'state_dict': models['teacher'].state_dict()}, checkpoint)
        model_cfg = cfg.model.copy()
        model_cfg['teacher'] = dict(model_cfg['teacher'], checkpoint=checkpoint)
        model_cfg.pop('validate_taps', None)
        if model_cfg.get('data_preprocessor') is None and cfg.get('data_preprocessor') is not None:
            model_cfg['data_preprocessor'] = cfg.data_preprocessor
        try:
            distiller = models['distiller_cls'](**{k: v for k, v in model_cfg.items() if k != 'type'})
        except Exception as exc:  # noqa: BLE001 - the message is what the user needs
            print(f'  the distiller does not build: {type(exc).__name__}: {exc}')
            return 1
    problems = check_distill_taps(distiller, size)
    for i, problem in enumerate(problems, 1):
        print(f'  {i}. {problem}')
    if not problems:
        print(f'  all {len(distiller.pairs)} pairs fit (channels, sizes, loss settings).')
    return 1 if problems else 0


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        check_cfg_options(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    torch.manual_seed(0)
    models = build_config_models(cfg)
    scope = models['scope']
    if args.shape:
        size, source = tuple(args.shape), '--shape'
    else:
        size, source = input_size_from_config(cfg, scope)
    print(f'{args.config}: {scope} models, fake batch of 2 images {size[0]}x{size[1]} (from {source})')
    if models['teacher'] is None:
        print_model('Model', models['student'], scope, size, 'loss', args)
        return 0
    student = print_model('Student', models['student'], scope, size, 'loss', args)
    teacher_mode, why, result = teacher_listing_mode(cfg, models['teacher'], scope, size)
    teacher = print_model('Teacher', models['teacher'], scope, size, teacher_mode, args, why, result)
    pairs = suggest_pairs(student, teacher)
    print('\nStudent-teacher pairs of the same stride whose shapes can be distilled (distill '
          'entries to start from; pick the losses and weights):')
    for s, t in pairs:
        print(f'  stride {format_stride(s.stride):>3}: {s.name} ({s.describe()}) <-> {t.name} '
              f'({t.describe()})\n      {entry_for_pair(s, t)},')
    if not pairs:
        print('  none: no map or token output of the same stride and batch size in both models.')
    if cfg.model.get('distill'):
        return check_config_taps(cfg, models, size)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
