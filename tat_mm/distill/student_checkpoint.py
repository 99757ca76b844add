"""Start a distiller from a pretrained student: a plain model checkpoint loads into its student.

A distiller's own checkpoints hold ``student.*`` keys (and the distillation modules' ``pairs.*``).
A checkpoint of the plain model -- the student trained alone, an upstream model-zoo file, an
exported student -- holds the model's keys without that prefix. MMEngine's ``load_from`` loads
non-strictly, so such a file used to load *nothing* into the distiller and only log a list of
missing and unexpected keys: the run then distilled into a randomly initialised student.

:func:`load_plain_student_state` is a ``load_state_dict`` pre-hook of every distiller. When no key
of the incoming state dict starts with ``student.``, the file is taken for a plain student
checkpoint and loaded **strictly** into the student: missing, unexpected or mis-shaped keys are an
error that lists them. The distillation modules keep their current (initial) weights. Distiller
checkpoints (``--resume``, a distiller's ``load_from``) are untouched. Being a pre-hook, it serves
every route: ``load_from``, :func:`mmengine.runner.load_checkpoint`, ``model.load_state_dict``.
"""
from typing import Dict, List

import torch.nn as nn
from mmengine.logging import print_log

STUDENT_PREFIX = 'student.'


def _listing(keys: List[str], limit: int = 10) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def check_student_state(student: nn.Module, state: Dict[str, object]) -> None:
    """Raise a ``ValueError`` listing every key of ``state`` that does not fit ``student``.

    Args:
        student (nn.Module): The distiller's student.
        state (dict): A plain state dict of the student's architecture (no ``student.`` prefix).
    """
    expected = student.state_dict()
    # BN's step counters are missing from old checkpoints; PyTorch and MMEngine accept that too.
    missing = [k for k in expected if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [f'{k} {tuple(state[k].shape)} (the student has {tuple(v.shape)})'
                  for k, v in expected.items()
                  if k in state and hasattr(state[k], 'shape') and state[k].shape != v.shape]
    if not (missing or unexpected or mis_shaped):
        return
    problems = []
    if missing:
        problems.append(f'missing from the file: {_listing(missing)}')
    if unexpected:
        problems.append(f'not in the student: {_listing(unexpected)}')
    if mis_shaped:
        problems.append(f'of another shape: {_listing(mis_shaped)}')
    raise ValueError(
        'load_from: the checkpoint has no `student.*` keys, so it was taken for a checkpoint of the '
        'plain student model, but it does not fit the student: ' + '; '.join(problems) + '. Use a '
        'checkpoint of the same architecture as the student (e.g. the student trained alone, or one '
        'exported with tools/export_student.py), or a distiller checkpoint. To initialise only part '
        'of the student from it (e.g. an ImageNet backbone), set it in the student config instead: '
        "student=dict(..., backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=<file>, "
        "prefix='backbone.'))), and remove load_from.")


def load_plain_student_state(distiller: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook: a plain student checkpoint goes into the student, strictly.

    Renames the plain keys to ``student.<key>`` in place and fills the distiller's other entries
    (distillation modules) with their current values, so that nothing is reported missing.

    Args:
        distiller (nn.Module): The distiller being loaded.
        state_dict (dict): The incoming state dict (changed in place).
        prefix (str): The distiller's prefix in it (``''`` at the top).
        *args: The rest of PyTorch's pre-hook arguments (unused).
    """
    keys = [k for k in state_dict if k.startswith(prefix)]
    if not keys or any(k.startswith(prefix + STUDENT_PREFIX) for k in keys):
        return  # empty, or a distiller checkpoint: load as it is
    plain = {k[len(prefix):]: state_dict.pop(k) for k in keys}
    check_student_state(distiller.student, plain)
    for key, value in plain.items():
        state_dict[prefix + STUDENT_PREFIX + key] = value
    for key, value in distiller.state_dict().items():
        if not key.startswith((STUDENT_PREFIX, 'teacher.')):
            state_dict.setdefault(prefix + key, value)
    print_log(f'Loaded a plain student checkpoint ({len(plain)} entries) into the distiller\'s '
              'student; the distillation modules keep their initial weights.', logger='current')
