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
3. Checkpoints that an interrupted save cannot lose (tests: ``tests/test_checkpoint_atomic.py``).
   MMEngine 0.10.7's ``CheckpointHook`` deletes the oldest checkpoint (``max_keep_ckpts``)
   *before* saving the new one, ``save_checkpoint`` writes the file in place
   (``LocalBackend.put``: ``open(path, 'wb')``) and the hook writes ``last_checkpoint`` in place:
   a kill or a full disk during a save left a partial or 0-byte checkpoint, no old one, and an
   empty or dangling ``last_checkpoint``, and ``--resume`` then failed. The fix: local
   checkpoints are written by :func:`tat_mm.engine.atomic_file.atomic_write` (temporary file in
   the same folder, flushed, ``fsync``-ed, ``os.replace``-d); the hook's ``last_checkpoint`` too
   (the hook's module gets an ``open`` that writes that way); the hook's removals of old and of
   previous best checkpoints run only once the new checkpoint and ``last_checkpoint`` are
   complete; and auto resume uses
   :func:`tat_mm.engine.resumable_checkpoint.find_resumable_checkpoint`, which falls back to
   the newest complete checkpoint when ``last_checkpoint`` is empty, missing or dangling, and
   says so. Other backends (``s3://``, ``petrel://``, ...) keep MMEngine's writer: an object
   store's upload replaces the object whole.
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
5. Config parsing time (tests: ``tests/test_compat.py``). For every ``pkg::path`` base, MMEngine's
   ``_get_cfg_metainfo`` reads the package's ``model-index.yml`` and every ``metafile.yml`` it
   lists (mmdet 3.3: 101 files, mmpretrain 84, mmseg 52) to see whether ``path`` names a model-zoo
   config, before it falls back to ``<package>/.mim/configs/path``: parsing one distillation
   config with its teacher config and their upstream bases read those files again for every
   base (a quarter of the quick demo's run time went there, profiled). The fix reads each
   package's metafiles once per process (again when ``model-index.yml`` changes) and answers
   from that table: the same entry, the same ``ValueError`` for a path that is not a model-zoo
   config.
"""
import builtins
import copy
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


def _open_writing_atomically(file, mode='r', *args, **kwargs):
    """``open`` for MMEngine's ``checkpoint_hook`` module: whole-file writes are atomic."""
    from .engine.atomic_file import atomic_write
    if mode in ('w', 'wb') and not args and not kwargs:
        return atomic_write(file, mode)
    return builtins.open(file, mode, *args, **kwargs)


class _RemovalsAfterSave:
    """A ``CheckpointHook.file_backend`` whose ``remove`` / ``rmtree`` wait for :meth:`run`."""

    def __init__(self, backend):
        self._backend = backend
        self._pending = []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def remove(self, path):
        self._pending.append((self._backend.remove, path))

    def rmtree(self, path):
        self._pending.append((self._backend.rmtree, path))

    def run(self, keep: set) -> None:
        """Do the removals, except of the files in ``keep`` (what the hook now points to)."""
        for remove, path in self._pending:
            if path not in keep:
                remove(path)


def _removing_after_save(save_method: Callable) -> Callable:
    """Wrap a ``CheckpointHook`` save method so that its removals run after it completed."""

    @functools.wraps(save_method)
    def save(self, runner, *args, **kwargs):
        backend = getattr(self, 'file_backend', None)
        if backend is None:  # before_train has not run: nothing to remove yet
            return save_method(self, runner, *args, **kwargs)
        removals = self.file_backend = _RemovalsAfterSave(backend)
        try:
            save_method(self, runner, *args, **kwargs)
        finally:
            self.file_backend = backend
        keep = {self.last_ckpt, getattr(self, 'best_ckpt_path', None),
                *(getattr(self, 'best_ckpt_path_dict', None) or {}).values()}
        removals.run(keep)

    setattr(save, _PATCHED_ATTR, True)
    return save


def patch_mmengine_atomic_checkpoints() -> bool:
    """Make MMEngine's checkpoint saving and auto resume survive interrupted saves (fix 3).

    Returns:
        bool: True if MMEngine is installed and is now patched (also when it already was).
    """
    try:
        import mmengine.runner
        from mmengine.fileio import LocalBackend, get_file_backend
        from mmengine.hooks import checkpoint_hook
        from mmengine.runner import _flexible_runner
        from mmengine.runner import checkpoint as mmengine_checkpoint
        from mmengine.runner import runner as mmengine_runner

        from .engine import atomic_file, resumable_checkpoint
    except ImportError:
        return False
    hook = checkpoint_hook.CheckpointHook
    if getattr(hook._save_checkpoint_with_step, _PATCHED_ATTR, False):
        return True
    original_save = mmengine_checkpoint.save_checkpoint

    @functools.wraps(original_save)
    def save_checkpoint(checkpoint, filename, file_client_args=None, backend_args=None):
        filename = str(filename)
        local = (file_client_args is None and not filename.startswith('pavi://') and isinstance(
            get_file_backend(filename, backend_args=backend_args), LocalBackend))
        if not local:
            return original_save(checkpoint, filename, file_client_args, backend_args)
        with atomic_file.atomic_write(filename) as f:
            torch.save(checkpoint, f)

    # Every module that imported the functions by name (the runners; the hook and the
    # strategies import them from these modules when they run).
    for module in (mmengine_checkpoint, mmengine.runner, mmengine_runner):
        module.save_checkpoint = save_checkpoint
    for module in (mmengine_checkpoint, mmengine.runner, mmengine_runner, _flexible_runner):
        module.find_latest_checkpoint = resumable_checkpoint.find_resumable_checkpoint
    checkpoint_hook.open = _open_writing_atomically  # `last_checkpoint`: the module's only write
    hook._save_best_checkpoint = _removing_after_save(hook._save_best_checkpoint)
    hook._save_checkpoint_with_step = _removing_after_save(hook._save_checkpoint_with_step)
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


@functools.lru_cache(maxsize=None)
def _metafile_configs(meta_index_path: str, mtime_ns: int) -> dict:
    """``{config name: model entry}`` of every metafile a ``model-index.yml`` lists, as MMEngine's
    ``_get_cfg_metainfo`` builds it (first entry per config; entries without ``Config`` warn)."""
    import warnings

    from mmengine.fileio import load
    package_mim = os.path.dirname(meta_index_path)
    configs = {}
    for meta_path in load(meta_index_path)['Import']:
        for model_cfg in load(os.path.join(package_mim, meta_path))['Models']:
            if 'Config' not in model_cfg:
                warnings.warn(f'There is not `Config` define in {model_cfg}')
                continue
            configs.setdefault(model_cfg['Config'].partition('/')[-1], model_cfg)
    return configs


def _cfg_metainfo_read_once(package_path: str, cfg_path: str) -> dict:
    """MMEngine's ``_get_cfg_metainfo`` (same answer, same errors) from a table read once."""
    meta_index_path = os.path.join(package_path, '.mim', 'model-index.yml')
    configs = _metafile_configs(meta_index_path, os.stat(meta_index_path).st_mtime_ns)
    if cfg_path not in configs:
        raise ValueError(f'Expected configs: {configs.keys()}, but got {cfg_path}')
    return copy.deepcopy(configs[cfg_path])


def patch_mmengine_config_metafiles() -> bool:
    """Read the task libraries' metafiles once per process when resolving ``pkg::`` configs.

    Returns:
        bool: True if MMEngine is installed and is now patched (also when it already was).
    """
    try:
        from mmengine.config import utils as config_utils
    except ImportError:
        return False
    if not getattr(config_utils._get_cfg_metainfo, _PATCHED_ATTR, False):
        setattr(_cfg_metainfo_read_once, _PATCHED_ATTR, True)
        config_utils._get_cfg_metainfo = _cfg_metainfo_read_once
    return True


def apply_all() -> None:
    """Apply every compatibility fix (called by ``import tat_mm``)."""
    patch_mmengine_checkpoint_loading()
    patch_mmengine_cpu_distributed()
    patch_mmengine_atomic_checkpoints()
    patch_mmengine_config_scope()
    patch_mmengine_config_metafiles()
