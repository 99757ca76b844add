"""Loading checkpoint files without letting them run code.

A ``.pth`` file is a pickle: unpickled with ``torch.load(..., weights_only=False)`` it can run any
code its author chose. Every checkpoint tat_mm loads or lets MMEngine load (teacher file or URL,
``load_from``, ``--resume``, ``tools/test.py``, ``tools/export_student.py``) goes through
:func:`load_checkpoint_file`, which unpickles with ``weights_only=True`` and allows, on top of
torch's own safe types, only the types listed in :func:`allowed_types` (what real MMEngine, mmcv
1.x, mmseg / mmdet / mmpretrain checkpoints carry). The allow-list is active only while one of
these loads runs (``torch.serialization.safe_globals``); nothing else of torch changes.

A file that needs another type is refused with :class:`UnsafeCheckpointError`, naming the file and
the type. To load a file you trust anyway, opt in for it explicitly:

* a teacher: ``teacher=dict(config=..., checkpoint=..., trust_checkpoint=True)``;
* anything else (``load_from``, ``--resume``, the tools): the environment variable
  ``TAT_MM_TRUST_CHECKPOINTS``, a comma-separated list of checkpoint files, URLs or directories
  (every file below them), or ``1`` to trust every checkpoint file.
"""
import contextlib
import contextvars
import io
import os
import os.path as osp
import pickle
import pickletools
import re
import urllib.error
import zipfile
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

TRUST_ENV = 'TAT_MM_TRUST_CHECKPOINTS'

# Set by `trusting_checkpoints()`: loads inside that block unpickle everything.
_TRUST_IN_CONTEXT = contextvars.ContextVar('tat_mm_trust_checkpoints', default=False)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs a type outside the allow-list (loading it could run code)."""


class CheckpointReadError(RuntimeError):
    """A checkpoint file could not be read (truncated, corrupted, not a torch file)."""


class CheckpointDownloadError(CheckpointReadError):
    """A checkpoint URL could not be downloaded (e.g. on a machine without internet)."""


def allowed_types() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The types a checkpoint may contain besides torch's own weights-only types.

    torch's default already covers tensors, ``OrderedDict``, ``Counter`` (MMEngine's ``MultiStepLR``
    milestones), ``torch.Size``/``dtype``/``device`` and plain Python containers and scalars. Each
    entry below was found by saving real checkpoints (see ``tests/test_checkpoint_safety.py``):

    Returns:
        list: Entries for ``torch.serialization.safe_globals`` (a callable, or a callable with the
        name it has in files written by older versions).
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.optim.scheduler import param_scheduler
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray

    # One dtype class per numpy type that can appear in a `meta` (numpy >= 1.25 pickles a dtype as
    # `numpy.dtype(...)` and then sets the state of its class, e.g. `numpy.dtypes.Float64DType`).
    dtype_classes = [type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDGSUOMm']
    return [
        # MMEngine's MessageHub state (checkpoint['message_hub']['log_scalars']): the smoothed
        # training losses, one HistoryBuffer (two numpy arrays and an int) per logged value.
        HistoryBuffer,
        # A HistoryBuffer also pickles its statistics methods (HistoryBuffer.min, .max, .current,
        # .mean), which pickle writes as `getattr(HistoryBuffer, 'min')`. The real getattr would
        # reach any attribute of any allowed object (and from there, code); this stand-in only
        # returns HistoryBuffer's public methods and the functions listed with _FunctionsOf.
        (_restricted_getattr, 'builtins.getattr'),
        # MMEngine's OneCycleLR state holds its annealing function, written as
        # `getattr(OneCycleParamScheduler, '_annealing_cos')`. The class name resolves to a
        # stand-in that only lends these two functions to getattr (it cannot be called or built).
        (_FunctionsOf(param_scheduler.OneCycleParamScheduler, '_annealing_cos', '_annealing_linear'),
         'mmengine.optim.scheduler.param_scheduler.OneCycleParamScheduler'),
        # numpy scalars: `meta`/`message_hub` hold numpy floats and ints (logged values, mmcv 1.x
        # `meta['hook_msgs']['best_score']`, seeds). scalar(dtype, raw bytes) only copies bytes.
        # Files name it after the numpy that wrote them: numpy.core (1.x) or numpy._core (2.x).
        (multiarray.scalar, 'numpy.core.multiarray.scalar'),
        (multiarray.scalar, 'numpy._core.multiarray.scalar'),
        # numpy arrays: HistoryBuffer's history, `dataset_meta` palettes (mmseg 0.x random palettes,
        # dataset metainfo). _reconstruct makes an empty array of an allowed class; the data are raw
        # bytes, or allowed objects for object arrays.
        (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (multiarray._reconstruct, 'numpy._core.multiarray._reconstruct'),
        np.ndarray,
        # The dtypes of those scalars and arrays.
        np.dtype,
        *dtype_classes,
    ]


class _FunctionsOf:
    """What a checkpoint gets for the name of ``cls``: only ``getattr(cls, name)`` for ``names``."""

    def __init__(self, cls: type, *names: str):
        self.cls, self.names = cls, names

    def __repr__(self):
        return self.cls.__qualname__


def _restricted_getattr(owner: Any, name: str) -> Callable:
    """``getattr`` as checkpoint files may use it: HistoryBuffer's public methods and the functions
    a :class:`_FunctionsOf` lends; anything else is refused."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if owner is HistoryBuffer and not name.startswith('_') and callable(
            vars(HistoryBuffer).get(name)):
        return getattr(HistoryBuffer, name)
    if isinstance(owner, _FunctionsOf) and name in owner.names:
        return getattr(owner.cls, name)
    owner_name = repr(owner) if isinstance(owner, _FunctionsOf) else getattr(
        owner, '__qualname__', type(owner).__name__)
    raise pickle.UnpicklingError(
        f'Unsupported getattr({owner_name}, {name!r}): checkpoints may only name the statistics '
        "methods of MMEngine's HistoryBuffer and the annealing functions of its OneCycleLR.")


def _trusted_by_env(name: str) -> bool:
    """Whether ``TAT_MM_TRUST_CHECKPOINTS`` trusts the checkpoint ``name`` (a path or URL)."""
    value = os.environ.get(TRUST_ENV, '').strip()
    if not value:
        return False
    if value == '1':
        return True
    real = osp.realpath(osp.expanduser(name)) if '://' not in name else None
    for entry in filter(None, (e.strip() for e in value.split(','))):
        if entry == name:
            return True
        if real is not None and '://' not in entry:
            trusted = osp.realpath(osp.expanduser(entry))
            if real == trusted or real.startswith(trusted.rstrip(os.sep) + os.sep):
                return True
    return False


@contextlib.contextmanager
def trusting_checkpoints() -> Iterator[None]:
    """Trust every checkpoint loaded in this block (the user opted in: ``trust_checkpoint``)."""
    token = _TRUST_IN_CONTEXT.set(True)
    try:
        yield
    finally:
        _TRUST_IN_CONTEXT.reset(token)


def _offending_types(message: str, local_file: Optional[str]) -> str:
    """The types torch refused: every global outside the allow-list, or the one in its message."""
    if local_file is not None:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(local_file)
        except Exception:  # noqa: BLE001 - not a zip checkpoint: use the message
            names = []
        if names:
            return ', '.join(names)
    for pattern in (r'GLOBAL ([\w.]+)', r"got <class '([\w.]+)'>", r'getattr\([^)]*\)',
                    r'Unsupported operand \w+'):
        match = re.search(pattern, message)
        if match:
            return match.group(match.lastindex or 0)
    lines = [line for line in message.splitlines() if line.strip()]
    return lines[-2] if len(lines) > 1 else message


def load_checkpoint_file(f: Any,
                         map_location: Any = None,
                         name: Optional[str] = None,
                         trusted: bool = False,
                         model_dir: Optional[str] = None,
                         **download_options) -> Any:
    """Load a checkpoint with ``weights_only=True`` and the allow-list, unless the user trusts it.

    Args:
        f (str | file-like): A local path, an ``http(s)://`` URL (downloaded to the torch hub cache,
            as ``torch.hub.load_state_dict_from_url`` does), or an open binary file.
        map_location: As for ``torch.load``. Defaults to None.
        name (str, optional): How to name the checkpoint in errors and in the trust check.
            Defaults to ``f`` itself.
        trusted (bool): The user opted in for this file: unpickle it fully. Defaults to False
            (also trusted inside :func:`trusting_checkpoints` or when listed in
            ``TAT_MM_TRUST_CHECKPOINTS``).
        model_dir (str, optional): Download directory for URLs. Defaults to the torch hub cache.
        **download_options: ``progress``, ``check_hash``, ``file_name`` of
            ``torch.hub.load_state_dict_from_url``, for URLs.

    Returns:
        The loaded object (usually a dict with ``state_dict`` and ``meta``).

    Raises:
        UnsafeCheckpointError: The file needs a type outside the allow-list.
        CheckpointReadError: The file is truncated, corrupted or not a torch file.
    """
    if name is None:
        name = f if isinstance(f, str) else getattr(f, 'name', repr(f))
    name = str(name)
    if isinstance(f, str) and f.startswith(('http://', 'https://')):
        def load(weights_only):
            return torch.hub.load_state_dict_from_url(
                f, model_dir=model_dir, map_location=map_location, weights_only=weights_only,
                **download_options)
    else:
        def load(weights_only):
            return torch.load(f, map_location=map_location, weights_only=weights_only)

    if trusted or _TRUST_IN_CONTEXT.get() or _trusted_by_env(name):
        return _read(load, False, name)
    with torch.serialization.safe_globals(allowed_types()):
        local_file = f if isinstance(f, (str, os.PathLike)) and '://' not in str(f) else None
        return _read(load, True, name, local_file,
                     source=f if local_file is not None or not isinstance(f, str) else None)


def _is_torch_file(source: Any) -> bool:
    """Whether ``source`` (a path or an open binary file) is laid out as ``torch.save`` files are:
    a whole zip archive, or torch's legacy format, whose first pickle is torch's magic number.
    True when it cannot be read back (then torch's own verdict stands)."""
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, 'rb') as f:
                head = f.read(64)
                whole_zip = head.startswith(b'PK\x03\x04') and zipfile.is_zipfile(f)
        else:
            position = source.tell()
            head = source.read(64)
            whole_zip = head.startswith(b'PK\x03\x04') and zipfile.is_zipfile(source)
            source.seek(position)
    except (OSError, AttributeError, ValueError):
        return True
    if head.startswith(b'PK\x03\x04'):
        return whole_zip  # no central directory (written last): truncated or not an archive
    try:  # the magic number is a short pickle (PROTO, LONG1, STOP with the default protocol)
        return any(isinstance(arg, int) and not isinstance(arg, bool)
                   and arg == torch.serialization.MAGIC_NUMBER
                   for _, arg, _ in pickletools.genops(io.BytesIO(head)))
    except Exception:  # noqa: BLE001 - not even a pickle
        return False


def _read(load: Callable[[bool], Any], weights_only: bool, name: str,
          local_file: Optional[str] = None, source: Any = None) -> Any:
    try:
        return load(weights_only)
    except urllib.error.URLError as exc:
        # One line that names the URL and the way round it, instead of urllib's traceback.
        raise CheckpointDownloadError(
            f'Cannot download checkpoint {name!r} ({exc.reason}); this machine may have no '
            'internet access. Download the file where you can (e.g. `wget <url>`), copy it here '
            'and give its path instead of the URL: for a teacher '
            '`--cfg-options model.teacher.checkpoint=<file>`, for a pretrained model '
            '`load_from=<file>` or its `init_cfg` checkpoint.') from None
    except FileNotFoundError:  # already says what is wrong
        raise
    except Exception as exc:  # noqa: BLE001 - sorted below
        if source is not None and not _is_torch_file(source):
            # Random or foreign bytes: the unpickler trips over them in any way ("Unsupported
            # operand", IndexError, ...): damage, not danger; torch would not load them either.
            raise CheckpointReadError(
                f'Cannot read checkpoint {name!r}: it is not a file torch.save writes (neither a '
                'zip archive nor torch\'s legacy format). The file is truncated or corrupted (an '
                'interrupted download or save leaves such files), or not a checkpoint: download '
                'or save it again.') from exc
        if not isinstance(exc, (pickle.UnpicklingError, RuntimeError, EOFError, ValueError,
                                OSError)):
            raise
        if (weights_only and isinstance(exc, pickle.UnpicklingError)
                and 'Weights only load failed' in str(exc)):
            raise UnsafeCheckpointError(
                f'Refusing to load checkpoint {name!r}: it contains '
                f'{_offending_types(str(exc), local_file)}, '
                'which is not a weight or one of the types MMEngine checkpoints hold, and '
                'unpickling it could run code from the file. tat_mm loads checkpoints with '
                'torch.load(weights_only=True) plus the allow-list in '
                'tat_mm/checkpoint_loading.py. If you trust this file (you wrote it, or its source '
                'is trusted), opt in for it: for a teacher set teacher=dict(..., '
                f'trust_checkpoint=True); for load_from, --resume and the tools set the '
                f'environment variable {TRUST_ENV}={name} (comma-separated files, URLs or '
                'directories; 1 trusts every file).') from None
        raise _read_error(name, exc) from exc


def _read_error(name: str, exc: BaseException) -> CheckpointReadError:
    text = str(exc).strip()
    damaged = isinstance(exc, (EOFError, pickle.UnpicklingError)) or any(
        word in text.lower() for word in ('zip', 'corrupt', 'truncated', 'magic number'))
    hint = (' The file is truncated or corrupted (an interrupted download or save leaves such '
            'files): download or save it again.') if damaged else ''
    return CheckpointReadError(f'Cannot read checkpoint {name!r}: {type(exc).__name__}: {text}'
                               f'{hint}')


def load_url(url: str, model_dir: Optional[str] = None, map_location: Any = None,
             progress: bool = True, check_hash: bool = False,
             file_name: Optional[str] = None) -> Any:
    """Drop-in for MMEngine's ``load_url`` (``http(s)://``, ``open-mmlab://``, ...)."""
    return load_checkpoint_file(url, map_location=map_location, model_dir=model_dir,
                                progress=progress, check_hash=check_hash, file_name=file_name)
