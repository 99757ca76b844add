"""Export the student of a tat_mm distiller checkpoint as a plain mm* model checkpoint + config.

Writes two files that plain mmseg / mmdet / mmpretrain use with no tat_mm import:

* ``DST`` (e.g. ``student.pth``): the student's weights (no missing or unexpected keys for the
  plain student model) and a ``meta`` of plain Python values (loads with
  ``torch.load(weights_only=True)``); ``meta['cfg']`` is the student's config, ``dataset_meta``
  (classes, palette) is kept for the inference APIs;
* ``DST`` with ``.py`` (e.g. ``student.py``, or ``--out-config``): the training config with the
  student as ``model``, for ``mmseg.apis.init_model(cfg, ckpt)``, ``mmdet.apis.init_detector``,
  ``mmpretrain.get_model(cfg, pretrained=ckpt)`` and the libraries' ``tools/test.py``. What only
  the distiller needs is dropped (its hooks, DAFA's optimizer constructor, scheduler split and
  DDP wrapper), and so is ``custom_imports`` of tat_mm when nothing left names a tat_mm type; when
  only the data does (the built-in digits datasets), tat_mm stays an optional import, so the
  inference APIs build the model without tat_mm installed.

The folders of both files are created if needed.

    python tools/export_student.py work_dirs/.../iter_40000.pth student.pth
"""
import use_venv  # noqa: F401,I001  (first: re-runs this tool with ./.venv/bin/python if needed)
import argparse
import os
import os.path as osp
from collections import OrderedDict
from typing import Any, Optional, Set

import numpy as np
import torch
from mmengine.config import Config

import tat_mm  # noqa: F401  (safe checkpoint loading, registries)
from tat_mm.checkpoint_loading import load_checkpoint_file
from tat_mm.distill.teacher import resolve_model_config

PREFIX = 'student.'
#: tat_mm hooks that also work for a plain model; every other tat_mm hook needs the distiller.
PLAIN_MODEL_HOOKS = ('RNGStateHook', )


def plain(value: Any, where: str = 'meta') -> Any:
    """``value`` with numpy scalars / arrays turned into Python numbers / lists (weights-only safe).

    Raises:
        TypeError: A value of another type (it would make the checkpoint need unpickling code).
    """
    if isinstance(value, dict):
        return {k: plain(v, f'{where}[{k!r}]') for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, f'{where}[{i}]') for i, v in enumerate(value))
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if value is None or isinstance(value, (str, bytes, bool, int, float, torch.Tensor)):
        return value
    raise TypeError(f'{where} is a {type(value).__name__}: the exported checkpoint holds plain '
                    'values only. Remove it from the checkpoint meta before exporting.')


def tat_mm_type_names() -> Set[str]:
    """The ``type`` names tat_mm registered (in MMEngine's root registries and their children)."""
    from mmengine import registry as mm_registry
    names, seen = set(), set()

    def walk(registry):
        if id(registry) in seen:
            return
        seen.add(id(registry))
        names.update(name for name, obj in registry.module_dict.items()
                     if getattr(obj, '__module__', '').startswith('tat_mm'))
        for child in registry.children.values():
            walk(child)

    for registry in vars(mm_registry).values():
        if isinstance(registry, mm_registry.Registry):
            walk(registry)
    return names


def types_in(node: Any) -> Set[str]:
    """Every ``type`` string in a (nested) config."""
    found = set()
    if isinstance(node, dict):
        if isinstance(node.get('type'), str):
            found.add(node['type'].split('.')[-1])
        for value in node.values():
            found |= types_in(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found |= types_in(value)
    return found


def drop_distiller_settings(cfg: Config, tat_mm_types: Set[str]) -> None:
    """Remove, in place, the settings that only a tat_mm distiller uses.

    The tat_mm hooks other than :data:`PLAIN_MODEL_HOOKS` (``DistillVisualizationHook``,
    ``DemoTeacherCheckHook``, ...), DAFA's ``DAFAOptimWrapperConstructor`` (with its ``dafa``
    optimizer), its scheduler split (``param_scheduler=dict(model=..., dafa=...)`` becomes the
    model's schedulers) and ``DAFADistributedDataParallel``.

    Args:
        cfg (Config): The training config with the student as ``model``.
        tat_mm_types (set[str]): The type names tat_mm registered.
    """
    hooks = cfg.get('custom_hooks')
    if hooks:
        cfg.custom_hooks = [h for h in hooks
                            if h.get('type') not in tat_mm_types or h['type'] in PLAIN_MODEL_HOOKS]
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper and optim_wrapper.get('constructor') in tat_mm_types:
        optim_wrapper.pop('constructor')
        optim_wrapper.pop('dafa', None)
    schedulers = cfg.get('param_scheduler')
    if isinstance(schedulers, dict) and 'model' in schedulers and 'type' not in schedulers:
        cfg.param_scheduler = schedulers['model']
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper and wrapper.get('type') in tat_mm_types:
        cfg.pop('model_wrapper_cfg')


def student_config(distiller_cfg: Config) -> Config:
    """The training config with the distiller's student as ``model`` (plain mm* config).

    What only the distiller needs is dropped (:func:`drop_distiller_settings`); ``custom_imports``
    of tat_mm goes when nothing left names a tat_mm type, becomes optional
    (``allow_failed_imports=True``) when only the data or hooks do, and stays when the model does
    (e.g. the CIFAR backbones); ``load_from`` and ``resume`` are cleared.
    """
    cfg = distiller_cfg.copy()
    distiller = cfg.model
    model = resolve_model_config(distiller['student'])
    if 'data_preprocessor' not in model and cfg.get('data_preprocessor') is not None:
        model['data_preprocessor'] = cfg['data_preprocessor']  # as the distiller gave it
    cfg.model = model
    cfg.load_from = None
    cfg.resume = False
    tat_mm_types = tat_mm_type_names()
    drop_distiller_settings(cfg, tat_mm_types)
    imports = cfg.get('custom_imports')
    if imports and 'tat_mm' in imports.get('imports', []):
        for_model = sorted(types_in(cfg.model) & tat_mm_types)
        for_rest = sorted(types_in(cfg.to_dict()) & tat_mm_types)
        if for_model:
            print(f'The student config keeps custom_imports of tat_mm for {", ".join(for_model)}.')
        elif for_rest:
            print('The student config keeps tat_mm as an optional import (allow_failed_imports) '
                  f'for {", ".join(for_rest)}: the model builds without tat_mm.')
            cfg.custom_imports = dict(imports, allow_failed_imports=True)
        else:
            rest = [name for name in imports['imports'] if name != 'tat_mm']
            if rest:
                cfg.custom_imports = dict(imports, imports=rest)
            else:
                cfg.pop('custom_imports')
    return cfg


def export_student(src: str, dst: str, out_config: Optional[str] = None,
                   distiller_config: Optional[str] = None) -> int:
    """Write the student's weights of distiller checkpoint ``src`` to ``dst`` and its config.

    Args:
        src (str): A checkpoint written by MMEngine while training a tat_mm distiller.
        dst (str): Output checkpoint path.
        out_config (str, optional): Output config path. Defaults to ``dst`` with ``.py``.
        distiller_config (str, optional): The distiller's training config, for checkpoints
            without ``meta['cfg']`` (MMEngine's runner always writes it). Defaults to None.

    Returns:
        int: The number of tensors written.
    """
    ckpt = load_checkpoint_file(src, map_location='cpu')  # weights-only, see tat_mm/compat.py
    state = ckpt.get('state_dict', ckpt)
    student = OrderedDict((k[len(PREFIX):], v) for k, v in state.items() if k.startswith(PREFIX))
    if not student:
        raise ValueError(f'{src} has no "{PREFIX}*" weights: it is not a tat_mm distiller checkpoint '
                         f'(its first keys: {list(state)[:5]}).')
    meta = dict(ckpt.get('meta', {}))
    if distiller_config is not None:
        cfg = Config.fromfile(distiller_config)
    elif meta.get('cfg'):
        cfg = Config.fromstring(meta['cfg'], file_format='.py')
    else:
        raise ValueError(f'{src} has no meta["cfg"] (the training config MMEngine writes): give '
                         'the distiller config with --config.')
    cfg = student_config(cfg)
    meta.pop('message_hub', None)  # training state, meaningless for the plain model
    meta['cfg'] = cfg.pretty_text
    meta['exported_from'] = osp.abspath(src)
    meta = plain(meta)
    out_config = out_config or osp.splitext(dst)[0] + '.py'
    for path in (dst, out_config):
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    torch.save({'meta': meta, 'state_dict': student}, dst)
    cfg.dump(out_config)
    return len(student)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='distiller checkpoint (e.g. work_dirs/.../iter_40000.pth)')
    parser.add_argument('dst', help='output checkpoint for the plain student model')
    parser.add_argument('--out-config', help='output student config (default: DST with .py)')
    parser.add_argument('--config', help='the distiller config, if SRC has no meta["cfg"]')
    args = parser.parse_args()
    out_config = args.out_config or osp.splitext(args.dst)[0] + '.py'
    n = export_student(args.src, args.dst, out_config, args.config)
    print(f'Wrote {n} student tensors to {args.dst} and the student config to {out_config}')


if __name__ == '__main__':
    main()
