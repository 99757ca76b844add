"""Make ``python tools/<tool>.py`` work without activating the venv of tools/setup_env.sh.

Every tool imports this module first (``import use_venv``). It does nothing when the running
Python has the stack (torch and mmengine). Otherwise, when ``<repo>/.venv/bin/python`` exists, it
re-runs the same command with that Python (saying so on stderr); when there is no venv either, it
stops with what to do. When the stack is there but tat_mm is not installed, the repository root is
put on ``sys.path`` (as tools/dist_train.sh does with ``PYTHONPATH``).
"""
import importlib.util
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VENV_DIR = osp.join(REPO_ROOT, '.venv')
VENV_PYTHON = osp.join(VENV_DIR, 'bin', 'python')
# Set on the re-run, so a venv that lacks the stack too cannot make it loop.
_REEXEC_FLAG = 'TAT_MM_VENV_REEXEC'


def _missing_stack():
    return [name for name in ('torch', 'mmengine') if importlib.util.find_spec(name) is None]


def ensure_stack() -> None:
    """Re-run this process with ``.venv/bin/python`` if the current Python lacks the stack."""
    missing = _missing_stack()
    if missing:
        in_venv = osp.realpath(sys.prefix) == osp.realpath(VENV_DIR)
        if osp.exists(VENV_PYTHON) and not in_venv and not os.environ.get(_REEXEC_FLAG):
            print(f'[tat_mm] {sys.executable} has no {", ".join(missing)}; running with '
                  f'{osp.relpath(VENV_PYTHON)} (activate it with `source .venv/bin/activate` to '
                  'skip this).', file=sys.stderr)
            os.environ[_REEXEC_FLAG] = '1'
            os.execv(VENV_PYTHON, [VENV_PYTHON] + sys.argv)
        sys.exit(f'{sys.executable} cannot import {", ".join(missing)}. Set up the environment '
                 f'with `bash tools/setup_env.sh` (it creates {VENV_DIR}), then run the tools '
                 'with `.venv/bin/python tools/...` or after `source .venv/bin/activate`.')
    if importlib.util.find_spec('tat_mm') is None and REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)


ensure_stack()
