"""Minimal fixes that make the pinned OpenMMLab stack work on current PyTorch.

Applied once on ``import tat_mm``. Each fix is small, documented here, idempotent and covered by a
test in ``tests/test_compat.py`` that fails without it.

1. Safe checkpoint loading (torch >= 2.6). MMEngine 0.10.7 (the last release) calls
   ``torch.load(filename, map_location=...)`` without ``weights_only``: on torch >= 2.6 every
   checkpoint the runner writes (numpy scalars and a ``MessageHub`` state in it) fails with
   ``Weights only load failed``, so ``--resume`` and ``load_from`` are broken; and URLs go through
   ``torch.hub.load_state_dict_from_url``, whose default is ``weights_only=False`` (any code in the
   file runs). The fix routes every loader of ``mmengine.runner.checkpoint`` (local files, URLs,
   ``open-mmlab://``, ``torchvision://``, ``s3://``, ...; the path of ``load_from``, ``--resume``,
   the teacher checkpoint and the inference APIs) through
   :func:`tat_mm.checkpoint_loading.load_checkpoint_file`: ``weights_only=True`` plus an
   allow-list of the types MMEngine checkpoints carry (listed there, each with why). Any other
   type is refused with an error naming the file and the type; opt in per file with
   ``teacher=dict(..., trust_checkpoint=True)`` or ``TAT_MM_TRUST_CHECKPOINTS``. It does so by
   giving that module a ``torch`` whose ``load`` is that loader, and a ``load_url`` that is the
   loader for URLs. ``torch.load`` itself and every other module are untouched.
2. Distributed training without CUDA (``tools/dist_train.sh`` on CPU machines, gloo): MMEngine
   0.10.7's ``init_dist('pytorch')`` always calls ``torch.cuda.set_device`` (fails with "Found no
   NVIDIA driver") and the runner always gives ``MMDistributedDataParallel`` ``device_ids=[rank]``
   (DDP rejects device ids for CPU modules). Without CUDA, the fix skips ``set_device``, uses
   'gloo' where the config asks for 'nccl' (which cannot run without CUDA), and drops
   ``device_ids`` for CPU modules. With CUDA nothing changes.
4. ``tat_mm::`` configs (tests: ``tests/test_install.py``). MMEngine resolves ``pkg::path`` in
   ``_base_`` only for the packages of its fixed table (``MODULE2PACKAGE`` in
   ``mmengine/config/utils.py``: ``AssertionError: mmengine does not support to load tat_mm
   config``), then reads ``<package>/.mim/configs/path``. The fix adds ``tat_mm`` to that table,
   so ``_base_ = ['tat_mm::seg/deeplabv3plus_r101_to_r18_voc_tat.py']`` works wherever tat_mm is
   imported before the config is parsed (tat_mm's tools, a script that imports it; the upstream
   ``tools/train.py`` parses first: see :mod:`tat_mm.configs`). And MMEngine's
   ``get_installed_path`` answers ``<site-packages>/<name>`` for any distribution it finds, which
   does not exist for an editable install (pip's PEP 660 ``-e .``: the package stays in the
   checkout); where that answer is not a folder and the package is importable, the fix answers
   the folder it is imported from. Unchanged for every package MMEngine already resolved.
   Last, MMEngine gives every top-level dict with a ``type`` inherited from ``pkg::`` the scope
   ``_scope_='pkg'``: right for ``mmseg::``, wrong for ``tat_mm::`` (tat_mm has no registry
   scope; its configs carry their own ``default_scope`` and their bases' scopes), where the
   runner then looked for ``SegDistiller`` in a ``tat_mm`` registry. ``tat_mm::`` bases get none.
"""
import functools
import importlib.util
import os
import sys
import types
from typing import Callable

import torch

from . import checkpoint_loading

_PATCHED_ATTR = '_tat_mm_patched'


def _torch_with_safe_load() -> types.ModuleType:
    """A stand-in for the ``torch`` module whose ``load`` is tat_mm's safe checkpoint loader."""

    @functools.wraps(torch.load)
    def load(f, map_location=None):
        return checkpoint_loading.load_checkpoint_file(f, map_location=map_location)

    proxy = types.ModuleType('torch')
    # Everything else resolves to the real torch module at call time.
    proxy.__getattr__ = lambda name: getattr(torch, name)  # type: ignore[attr-defined]
    proxy.load = load  # type: ignore[attr-defined]
    setattr(proxy, _PATCHED_ATTR, True)
    return proxy


def patch_mmengine_checkpoint_loading() -> bool:
    """Route MMEngine's checkpoint loaders through :mod:`tat_mm.checkpoint_loading`.

    Returns:
        bool: True if MMEngine is installed and is now patched (also when it already was).
    """
    try:
        from mmengine.runner import checkpoint as mmengine_checkpoint
    except ImportError:
        return False
    if not getattr(mmengine_checkpoint.torch, _PATCHED_ATTR, False):
        mmengine_checkpoint.torch = _torch_with_safe_load()
    mmengine_checkpoint.load_url = checkpoint_loading.load_url
    return True


def patch_mmengine_cpu_distributed() -> bool:
    """Let MMEngine's pytorch launcher and DDP wrapper run on machines without CUDA.

    Returns:
        bool: True if MMEngine is installed and is now patched (also when it already was).
    """
    try:
        from mmengine.dist import utils as dist_utils
        from mmengine.model.wrappers import distributed as mm_ddp
    except ImportError:
        return False
    if getattr(dist_utils._init_dist_pytorch, _PATCHED_ATTR, False):
        return True
    original_init_dist = dist_utils._init_dist_pytorch

    @functools.wraps(original_init_dist)
    def init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if torch.cuda.is_available() or init_backend != 'torch':
            return original_init_dist(backend, init_backend, **kwargs)
        # No CUDA: no device to select, and NCCL cannot work; gloo is torch's CPU backend.
        backend = 'gloo' if backend == 'nccl' else backend
        torch.distributed.init_process_group(backend=backend, **kwargs)

    setattr(init_dist_pytorch, _PATCHED_ATTR, True)
    dist_utils._init_dist_pytorch = init_dist_pytorch

    original_ddp_init = mm_ddp.MMDistributedDataParallel.__init__

    @functools.wraps(original_ddp_init)
    def ddp_init(self, module, detect_anomalous_params=False, **kwargs):
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        if on_cpu and not torch.cuda.is_available():
            kwargs.pop('device_ids', None)  # DDP takes no device ids for CPU modules
            kwargs.pop('output_device', None)
        original_ddp_init(self, module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    mm_ddp.MMDistributedDataParallel.__init__ = ddp_init
    return True


def _resolving_editable_installs(get_installed_path: Callable[[str], str]) -> Callable[[str], str]:
    """``get_installed_path`` that falls back to where ``package`` is imported from."""
    if getattr(get_installed_path, _PATCHED_ATTR, False):
        return get_installed_path

    @functools.wraps(get_installed_path)
    def installed_path(package: str) -> str:
        try:
            path = get_installed_path(package)
        except Exception:  # noqa: BLE001 - not a distribution: only the import location is left
            path = None
        if path is None or not os.path.isdir(path):
            spec = importlib.util.find_spec(package)
            if spec is not None and spec.origin is not None:
                return os.path.dirname(spec.origin)
            if path is None:
                return get_installed_path(package)  # MMEngine's own error
        return path

    setattr(installed_path, _PATCHED_ATTR, True)
    return installed_path


def patch_mmengine_config_scope() -> bool:
    """Let ``tat_mm::path`` resolve in configs, also from an editable install.

    Returns:
        bool: True if MMEngine is installed and is now patched (also when it already was).
    """
    try:
        import mmengine.utils
        from mmengine.config import config as mmengine_config
        from mmengine.config import utils as config_utils
        from mmengine.utils import package_utils
    except ImportError:
        return False
    config_utils.MODULE2PACKAGE.setdefault('tat_mm', 'tat_mm')
    get_cfg_path = mmengine_config.Config._get_cfg_path
    if not getattr(get_cfg_path, _PATCHED_ATTR, False):

        @functools.wraps(get_cfg_path)
        def get_cfg_path_without_tat_mm_scope(cfg_path: str, filename: str):
            path, scope = get_cfg_path(cfg_path, filename)
            return path, (None if scope == 'tat_mm' else scope)

        setattr(get_cfg_path_without_tat_mm_scope, _PATCHED_ATTR, True)
        mmengine_config.Config._get_cfg_path = staticmethod(get_cfg_path_without_tat_mm_scope)
    modules = [mmengine.utils, package_utils, mmengine_config]
    if 'mmengine.hub.hub' in sys.modules:  # imported later, it takes the patched mmengine.utils'
        modules.append(sys.modules['mmengine.hub.hub'])
    for module in modules:
        module.get_installed_path = _resolving_editable_installs(module.get_installed_path)
    return True


def apply_all() -> None:
    """Apply every compatibility fix (called by ``import tat_mm``)."""
    patch_mmengine_checkpoint_loading()
    patch_mmengine_cpu_distributed()
    patch_mmengine_config_scope()
