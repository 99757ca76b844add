"""How the distiller calls its teacher: ``teacher_mode``.

The teacher only has to run far enough for its taps to fire (then :class:`TapsComplete` stops it),
so ``tensor`` mode (the model's plain forward, no post-processing, no ground truth) is the default.
Some heads cannot run there: mmseg calls a decode head in ``tensor`` mode without the batch's data
samples, and query-based heads (``Mask2FormerHead``, ``MaskFormerHead``) need them
(``forward(x, batch_data_samples)``). ``predict`` mode passes them (its post-processing never runs:
the last tap stops the pass first); ``loss`` mode passes them with the ground truth.

``'auto'`` (the default) picks ``predict`` when a module on the path of a teacher tap has a
``forward`` that requires data samples or image metas, else ``tensor``.
"""
import inspect
from typing import Iterable, Optional, Tuple

import torch.nn as nn

TEACHER_MODES = ('auto', 'tensor', 'predict', 'loss')

# Parameter names of a forward() that needs the batch's samples (mmseg / mmdet heads).
_SAMPLE_ARGS = ('batch_data_samples', 'data_samples', 'batch_img_metas', 'img_metas')


def needs_data_samples(module: nn.Module) -> bool:
    """Whether ``module.forward`` has a required parameter for data samples or image metas.

    Args:
        module (nn.Module): Any module.

    Returns:
        bool: True for e.g. mmseg's ``Mask2FormerHead`` (``forward(x, batch_data_samples)``).
    """
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name in _SAMPLE_ARGS and p.default is inspect.Parameter.empty
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


def module_needing_data_samples(model: nn.Module, paths: Iterable[str]) -> Optional[Tuple[str, str]]:
    """The first module on the tap ``paths`` (the tapped modules and their parents, not the model
    itself) whose forward requires data samples: ``(path, class name)``, or None."""
    for path in paths:
        parts = path.split('.')
        for depth in range(1, len(parts) + 1):
            prefix = '.'.join(parts[:depth])
            module = model.get_submodule(prefix)
            if needs_data_samples(module):
                return prefix, type(module).__name__
    return None


def resolve_teacher_mode(teacher_mode: str, teacher: nn.Module, tap_paths: Iterable[str]) -> str:
    """The forward mode the distiller runs ``teacher`` in ('tensor', 'predict' or 'loss').

    Args:
        teacher_mode (str): 'auto', 'tensor', 'predict' or 'loss'.
        teacher (nn.Module): The teacher.
        tap_paths (Iterable[str]): The module paths of the teacher taps.

    Returns:
        str: ``teacher_mode``, or for 'auto': 'predict' when a tapped module (or a parent of it)
        needs the batch's data samples, else 'tensor'.

    Raises:
        ValueError: An unknown ``teacher_mode``.
    """
    if teacher_mode not in TEACHER_MODES:
        raise ValueError(f'teacher_mode={teacher_mode!r}; expected one of {", ".join(TEACHER_MODES)} '
                         "('auto': 'predict' when a tapped head needs the batch's data samples, "
                         "else 'tensor').")
    if teacher_mode != 'auto':
        return teacher_mode
    return 'predict' if module_needing_data_samples(teacher, tap_paths) else 'tensor'


def prepare_teacher(teacher: nn.Module, mode: str) -> None:
    """Make ``mode`` give the teacher the student's very input.

    In ``predict`` mode an mmseg segmentor with ``test_cfg.mode='slide'`` would run on crops and
    its taps would fire on the first crop only: the teacher runs on the whole input instead (its
    ``test_cfg`` serves nothing else in a distiller).
    """
    test_cfg = getattr(teacher, 'test_cfg', None)
    if mode == 'predict' and isinstance(test_cfg, dict) and test_cfg.get('mode') == 'slide':
        teacher.test_cfg = dict(test_cfg, mode='whole')


def missing_samples_message(teacher: nn.Module, mode: str, error: Exception) -> Optional[str]:
    """The error for a teacher forward that failed for want of data samples (None: another error).

    Args:
        teacher (nn.Module): The teacher.
        mode (str): The mode it ran in.
        error (Exception): What its forward raised.
    """
    if mode != 'tensor' or 'required positional argument' not in str(error):
        return None
    return (f"The teacher ({type(teacher).__name__}) failed in teacher_mode='tensor': {error}. In "
            'tensor mode some heads are called without the batch\'s data samples, which query-based '
            "heads (Mask2Former, MaskFormer) need. Set teacher_mode='predict' on the distiller "
            "(--cfg-options model.teacher_mode=predict), or 'auto' to choose it from the tapped "
            'modules.')
