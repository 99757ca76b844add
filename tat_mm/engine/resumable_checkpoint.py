"""Which checkpoint an automatic resume (``--resume``, ``resume=True`` without ``load_from``) uses.

MMEngine resumes from the file named in ``<work_dir>/last_checkpoint`` and fails
(``FileNotFoundError: ... can not be found``) when that record is empty, names a missing file, or
names a truncated file, even with a complete checkpoint beside it.
:func:`find_resumable_checkpoint` keeps MMEngine's choice when it is complete, and otherwise takes
the newest complete checkpoint and logs that it did.
"""
import logging
import os
import os.path as osp
import re
import zipfile
from typing import List, Optional

from mmengine.logging import print_log

# The names MMEngine's CheckpointHook gives checkpoints by default ('epoch_{}.pth', 'iter_{}.pth').
# best_*.pth are left out: they are saved without optimizer and scheduler states.
CHECKPOINT_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole ``torch.save`` file (a zip archive whose central directory,
    written last, is there and lists the pickle), without reading the weights.

    Args:
        path (str): A local file.

    Returns:
        bool: False for a missing, empty, truncated or non-torch file.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name == 'data.pkl' or name.endswith('/data.pkl')
                       for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def complete_checkpoints(folders: List[str]) -> List[str]:
    """The complete ``epoch_N.pth`` / ``iter_N.pth`` files in ``folders``, highest N first.

    Args:
        folders (List[str]): Folders to look in (not recursively); missing ones are skipped.

    Returns:
        List[str]: Paths of complete checkpoints.
    """
    found = {}
    for folder in folders:
        if not osp.isdir(folder):
            continue
        for name in os.listdir(folder):
            match = CHECKPOINT_NAME.match(name)
            if match:
                found[osp.join(folder, name)] = int(match.group(2))
    ordered = sorted(found, key=lambda path: (found[path], osp.getmtime(path)), reverse=True)
    return [path for path in ordered if is_complete_checkpoint(path)]


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """Drop-in for MMEngine's ``find_latest_checkpoint``, robust to a damaged ``last_checkpoint``.

    * ``last_checkpoint`` names a complete file (or a folder, as DeepSpeed saves, or a URL): that.
    * It is missing, empty, or names a missing or incomplete file: the newest complete
      ``epoch_N.pth`` / ``iter_N.pth`` in ``work_dir`` and in the folder ``last_checkpoint``
      names (the ``CheckpointHook``'s ``out_dir``), with a warning saying why.
    * No ``last_checkpoint`` and no checkpoint: None (the run starts from scratch, as in MMEngine).
    * A ``last_checkpoint`` but no complete checkpoint at all: an error (the run did save, and
      starting again from scratch would silently throw that away).

    Args:
        work_dir (str): The runner's work dir.

    Returns:
        str | None: The checkpoint to resume from.

    Raises:
        FileNotFoundError: ``last_checkpoint`` exists but no complete checkpoint is left.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip()
        if named and ('://' in named or osp.isdir(named) or is_complete_checkpoint(named)):
            return named
        if not named:
            why = f'{record} is empty'
        elif not osp.exists(named):
            why = f'{record} names {named}, which does not exist'
        else:
            why = f'{record} names {named}, which is incomplete (truncated or not a checkpoint)'
    else:
        why = f'there is no {record}'
    folders = [work_dir] + ([osp.dirname(named)] if named and osp.dirname(named) else [])
    folders = list(dict.fromkeys(osp.normpath(folder) for folder in folders))
    candidates = complete_checkpoints(folders)
    if candidates:
        print_log(f'Resuming from {candidates[0]}, the newest complete checkpoint: {why}.',
                  logger='current', level=logging.WARNING)
        return candidates[0]
    if named is None:
        print_log('Did not find last_checkpoint to be resumed.', logger='current')
        return None
    raise FileNotFoundError(
        f'Cannot resume: {why}, and there is no complete epoch_N.pth / iter_N.pth in '
        f'{" or ".join(folders)}. Resume from a checkpoint you have with --resume CHECKPOINT '
        f'(resume=True, load_from=CHECKPOINT), or delete {record} to start from scratch.')
