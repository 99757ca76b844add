"""Building, strictly loading and freezing the teacher."""
import contextlib
import copy
import os.path as osp
import warnings
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.device import get_device
from mmengine.registry import DefaultScope, Registry
from mmengine.runner.checkpoint import _load_checkpoint

from ..checkpoint_loading import trusting_checkpoints


def load_config(path: str) -> Config:
    """Load a config from a local file or from an installed package (``'mmseg::path/to.py'``).

    Args:
        path (str): Local path, or ``'<package>::<path under the package's configs/>'``.

    Returns:
        Config: The config.
    """
    if '::' in path:
        package, rel_path = path.split('::', 1)
        try:
            from mmengine.utils import get_installed_path
            package_path = get_installed_path(package)
        except Exception as exc:  # noqa: BLE001 - re-raised with the fix
            raise ValueError(f'Cannot resolve config {path!r}: package {package!r} is not installed '
                             f'(pip install it, or give a local config path).') from exc
        full_path = osp.join(package_path, '.mim', 'configs', rel_path)
        if not osp.isfile(full_path):
            raise FileNotFoundError(f'Config {path!r} not found: {full_path} does not exist. '
                                    f'Check the path under {package}/configs/.')
        return Config.fromfile(full_path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'Config file {path!r} does not exist.')
    return Config.fromfile(path)


def resolve_model_config(config: Union[str, dict, Config]) -> dict:
    """Return the model config dict from a model dict, a full config, or a config path.

    Args:
        config (str | dict | Config): A config path (local or ``'mmseg::...'``), a full config with a
            ``model`` field, or a model config dict with a ``type``.

    Returns:
        dict: The model config (with the top-level ``data_preprocessor`` merged in, as MMEngine's
        ``get_model`` does).
    """
    if isinstance(config, str):
        config = load_config(config)
    if 'model' in config:
        model_cfg = ConfigDict(config['model'])
        if 'data_preprocessor' in config and 'data_preprocessor' not in model_cfg:
            model_cfg['data_preprocessor'] = config['data_preprocessor']
        return model_cfg
    if 'type' not in config:
        raise ValueError('A teacher/student config must be a config path, a full config with a '
                         f'`model` field, or a model dict with a `type`; got keys {list(config)}.')
    return ConfigDict(config)


def load_checkpoint_strict(model: nn.Module, checkpoint: str, model_name: str = 'teacher',
                           trusted: bool = False) -> None:
    """Load ``checkpoint`` into ``model``; any missing, unexpected or mis-shaped key is an error.

    Args:
        model (nn.Module): The model to load into.
        checkpoint (str): Local path or URL of an MMEngine / plain ``state_dict`` checkpoint.
        model_name (str): How to call the model in error messages. Defaults to 'teacher'.
        trusted (bool): The user trusts this file: unpickle it fully instead of weights-only with
            the allow-list of :mod:`tat_mm.checkpoint_loading`. Defaults to False.
    """
    if '://' not in checkpoint and not osp.isfile(osp.expanduser(checkpoint)):
        raise FileNotFoundError(f'The {model_name} checkpoint {checkpoint!r} does not exist. Set '
                                f'`model.{model_name}.checkpoint` to the trained {model_name} '
                                f'weights (in the config, or --cfg-options '
                                f'model.{model_name}.checkpoint=PATH).')
    # MMEngine's loaders go through tat_mm.checkpoint_loading (weights-only; see tat_mm/compat.py).
    with trusting_checkpoints() if trusted else contextlib.nullcontext():
        ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    # Checkpoints saved from a (distributed) wrapper carry a 'module.' prefix.
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                        for k in set(own) & set(state)
                        if hasattr(state[k], 'shape') and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or mismatched:

        def show(keys):
            return ', '.join(keys[:10]) + (f' ... ({len(keys)} in all)' if len(keys) > 10 else '')

        raise ValueError(
            f'The {model_name} checkpoint {checkpoint!r} does not match the {model_name} model '
            f'({type(model).__name__}): is it the checkpoint of this architecture?\n'
            f'  missing keys: {show(missing) or "none"}\n'
            f'  unexpected keys: {show(unexpected) or "none"}\n'
            f'  shape mismatches: {show(mismatched) or "none"}')
    model.load_state_dict(state, strict=True)


def build_teacher(teacher: dict, registry: Registry, scope: Optional[str] = None,
                  data_preprocessor: Optional[dict] = None) -> nn.Module:
    """Build the teacher from its config, load its checkpoint strictly and freeze it.

    Args:
        teacher (dict): ``dict(config=..., checkpoint=...)`` where ``config`` is a config path
            (local or ``'mmseg::...'``), a full config or a model dict, and ``checkpoint`` a path
            or URL. Optional ``cfg_options`` (dict) is merged into the model config. Optional
            ``trust_checkpoint=True`` unpickles the checkpoint fully (only for a file you trust:
            by default it is loaded weights-only, see :mod:`tat_mm.checkpoint_loading`).
            Optional ``load_checkpoint=False`` builds the teacher without its weights, for
            evaluation (``tools/test.py`` sets it): running such a teacher is an error.
        registry (Registry): The task library's ``MODELS`` registry.
        scope (str, optional): The task library's scope, used to build the teacher whatever the
            runner's ``default_scope`` is. Defaults to None.
        data_preprocessor (dict, optional): The teacher's data preprocessor when its config has
            none (the distiller passes the student's). Defaults to None.

    Returns:
        nn.Module: The teacher in eval mode with ``requires_grad=False`` everywhere.
    """
    unknown = set(teacher) - {'config', 'checkpoint', 'cfg_options', 'trust_checkpoint',
                              'load_checkpoint'}
    if unknown or 'config' not in teacher:
        raise ValueError('`teacher` must be dict(config=<path or model dict>, checkpoint=<path or '
                         'url>[, cfg_options=dict(...), trust_checkpoint=False, '
                         f'load_checkpoint=True]); got keys {sorted(teacher)}.')
    if not teacher.get('load_checkpoint', True):
        # Evaluation only (tools/test.py): the student is what runs; the teacher file may be absent.
        return freeze(without_weights(build_teacher_model(teacher, registry, scope,
                                                          data_preprocessor)))
    if not teacher.get('checkpoint'):
        raise ValueError('`model.teacher.checkpoint` is not set: a distillation teacher needs '
                         'trained weights. Give the path or URL of the teacher checkpoint (in the '
                         'config, or --cfg-options model.teacher.checkpoint=PATH).')
    model = build_teacher_model(teacher, registry, scope, data_preprocessor)
    load_checkpoint_strict(model, teacher['checkpoint'], 'teacher',
                           trusted=bool(teacher.get('trust_checkpoint', False)))
    return freeze(model)


def without_weights(model: nn.Module) -> nn.Module:
    """Mark a teacher built with ``load_checkpoint=False``: running it raises a clear error.

    Loading a state dict into it (a checkpoint written with ``save_teacher=True``) lifts the mark.
    """

    def refuse(module, args):
        raise RuntimeError(
            'The teacher was built without its weights (model.teacher.load_checkpoint=False, which '
            'tools/test.py sets: evaluation runs the student only), so it cannot be run: the '
            'distillation losses would come from random weights. To train, build the distiller '
            'without load_checkpoint=False.')

    handle = model.register_forward_pre_hook(refuse)
    model.register_load_state_dict_post_hook(lambda module, keys: handle.remove())
    return model


def build_teacher_model(teacher: dict, registry: Registry, scope: Optional[str] = None,
                        data_preprocessor: Optional[dict] = None) -> nn.Module:
    """Build the teacher's architecture from ``teacher['config']`` (and ``cfg_options``), no weights.

    Used by :func:`build_teacher` and by ``tools/inspect_taps.py``, which needs the teacher's
    shapes but not its checkpoint.

    Args:
        teacher (dict): See :func:`build_teacher`; ``checkpoint`` is not read.
        registry (Registry): The task library's ``MODELS`` registry.
        scope (str, optional): The task library's scope. Defaults to None.
        data_preprocessor (dict, optional): Used when the teacher's config has none. Defaults to
            None.

    Returns:
        nn.Module: The teacher with freshly initialised (random) weights.
    """
    model_cfg = resolve_model_config(teacher['config'])
    if teacher.get('cfg_options'):
        model_cfg.merge(teacher["cfg_options"])
    if data_preprocessor is not None and model_cfg.get('data_preprocessor') is None:
        model_cfg['data_preprocessor'] = copy.deepcopy(data_preprocessor)
    # The checkpoint replaces every weight, so do not fetch backbone pre-training weights.
    model_cfg.pop('pretrained', None)
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(model_cfg)


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode and turn off gradients for all its parameters."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def parse_teacher_dtype(name: Optional[str]) -> Optional[torch.dtype]:
    """Map ``None``/'float16'/'bfloat16' to a torch dtype (None keeps the teacher in fp32)."""
    dtypes = {None: None, 'float32': None, 'float16': torch.float16, 'fp16': torch.float16,
              'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16}
    if name not in dtypes:
        raise ValueError(f'teacher_dtype must be one of None, "float16", "bfloat16"; got {name!r}.')
    if dtypes[name] == torch.float16 and get_device() == 'cpu':
        # Where the runner will train (MMEngine's rule): no GPU here, so the teacher runs on CPU.
        warnings.warn(
            "teacher_dtype='float16' on a machine without a GPU: CPUs have few float16 kernels, "
            'so a float16 teacher can run far slower than in float32 (measured once at ~17x: 4.3 s '
            'vs 0.25 s per iteration of the cls demo; it depends on the CPU and the torch '
            "version). On CPU use teacher_dtype='bfloat16' (native kernels on recent CPUs) or "
            'None (float32, usually the fastest there).',
            stacklevel=2)
    return dtypes[name]
