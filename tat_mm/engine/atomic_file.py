"""Writing a file so that readers only ever see the old or the complete new content.

The data go to a hidden temporary file in the target's folder, which is flushed, ``fsync``-ed and
then ``os.replace``-d over the target (an atomic rename on POSIX and Windows, because both names
are on the same file system), and the folder is ``fsync``-ed so the rename survives a power loss.
A write that fails or is killed part-way leaves the target as it was: at most a hidden
``.<name>.<random>.tmp`` file stays behind after a kill (an exception removes it), until the next
complete write of the same file removes it.
"""
import contextlib
import os
import os.path as osp
import re
import secrets
from typing import IO, Iterator

TEMPORARY_SUFFIX = '.tmp'


def temporary_name(path: str) -> str:
    """A fresh name for the temporary file of a write to ``path``: hidden, in the same folder,
    and not ending with the target's extension (``.pth``), so that nothing looking for
    checkpoints takes it for one."""
    folder, name = osp.split(osp.abspath(path))
    return osp.join(folder, f'.{name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}')


def remove_stale_temporaries(path: str) -> None:
    """Remove temporary files that killed writes to ``path`` left behind (only one process
    writes a given checkpoint: MMEngine saves on rank 0)."""
    folder, name = osp.split(osp.abspath(path))
    stale = re.compile(rf'^\.{re.escape(name)}\.[0-9a-f]{{8}}{re.escape(TEMPORARY_SUFFIX)}$')
    for entry in os.listdir(folder):
        if stale.match(entry):
            with contextlib.suppress(OSError):
                os.remove(osp.join(folder, entry))


def fsync_folder(folder: str) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where folders cannot be opened
    (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support it for folders; the data are synced
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb', encoding: str = None) -> Iterator[IO]:
    """Open ``path`` for writing so that it is replaced only once the block completed.

    The temporary file is created with the permissions ``open`` would give (``0o666`` less the
    umask), so a checkpoint written this way looks like one written by MMEngine.

    Args:
        path (str): The file to write; its folder is created if missing.
        mode (str): ``'wb'`` or ``'w'``. Defaults to ``'wb'``.
        encoding (str, optional): For text mode. Defaults to None (the locale's, as ``open``).

    Yields:
        file: The open temporary file; write to it as to ``open(path, mode)``.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f"atomic_write writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_folder(folder)
    remove_stale_temporaries(path)
