"""Catch ``--cfg-options`` overrides that MMEngine would accept and silently ignore.

A config's top-level variable (``teacher_checkpoint = 'x.pth'``, mmseg's ``crop_size = (512,
512)``) is copied into the fields that use it when the file is read. Overriding the variable
afterwards (``--cfg-options teacher_checkpoint=y.pth``) changes only the variable, not the copies,
so the run goes on with the old value. :func:`check_cfg_options` turns that into an error naming
the keys to override instead (e.g. ``model.teacher.checkpoint``).
"""
from typing import Any, Iterator, List, Tuple

# Top-level keys the runner reads itself: overriding them works.
RUNNER_KEYS = {
    'work_dir', 'load_from', 'resume', 'launcher', 'default_scope', 'log_level', 'experiment_name',
    'custom_imports', 'runner_type', 'cfg', 'model_wrapper_cfg', 'auto_scale_lr'
}


def _leaves(node: Any, prefix: str = '') -> Iterator[Tuple[str, Any]]:
    """(dotted path, value) of every leaf and every list/tuple of ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f'{prefix}{key}.')
    elif isinstance(node, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in node):
        for i, value in enumerate(node):
            yield from _leaves(value, f'{prefix}{i}.')
    else:
        yield prefix[:-1], node


def copies_of_variable(cfg, key: str) -> List[str]:
    """The dotted paths that hold the value of the top-level variable ``key`` (its copies).

    Only string and tuple/list values are traced (a number such as 2 matches too much by chance).

    Args:
        cfg (Config | dict): The config as read from the file.
        key (str): A top-level key.

    Returns:
        list[str]: Paths other than ``key`` whose value equals ``cfg[key]``.
    """
    value = cfg.get(key)
    if not isinstance(value, (str, list, tuple)) or len(value) == 0:
        return []
    if isinstance(value, (list, tuple)):
        value = list(value)
    found = []
    for top, node in cfg.items():
        if top == key:
            continue
        for path, leaf in _leaves({top: node}):
            leaf = list(leaf) if isinstance(leaf, tuple) else leaf
            if leaf == value:
                found.append(path)
    return found


def check_cfg_options(cfg, options: dict) -> None:
    """Raise ``ValueError`` when an override targets a config variable that only has copies.

    Args:
        cfg (Config): The config as read from the file (before the overrides are merged).
        options (dict): The ``--cfg-options`` (dotted keys).
    """
    data = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    for key in options:
        if '.' in key or key in RUNNER_KEYS or key not in data:
            continue
        copies = copies_of_variable(data, key)
        if copies:
            new = options[key]
            sets = ' '.join(f'{path}={new}' for path in copies)
            raise ValueError(
                f'--cfg-options {key}={new}: `{key}` is a variable of the config; its value was '
                f'copied into {", ".join(copies)} when the config was read, so overriding it would '
                f'change nothing. Override the real key(s) instead: --cfg-options {sets}')
