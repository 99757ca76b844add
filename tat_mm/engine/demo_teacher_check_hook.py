"""Refuse to distil from a demo teacher that was trained in quick mode or not to the end."""
import json
import os.path as osp

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DemoTeacherCheckHook(Hook):
    """Check, before training, the record ``tools/demo.py`` writes beside a demo teacher.

    ``tools/demo.py`` saves each teacher as ``teacher.pth`` with ``teacher.json`` next to it
    (iterations, quick mode or not, val metrics). A teacher from ``--quick`` (3 iterations) or one
    whose training stopped early gives distillation results that mean nothing, and nothing else
    would say so: this hook stops the run with an error that says how to get a real teacher.

    Args:
        min_iters (int): The iterations the teacher's config trains for.
    """

    priority = 'VERY_HIGH'

    def __init__(self, min_iters: int):
        self.min_iters = min_iters

    def before_train(self, runner) -> None:
        model_cfg = runner.cfg.model
        teacher = model_cfg.get('teacher') or {}
        ckpt = teacher.get('checkpoint')
        if not ckpt:
            return
        record_file = osp.join(osp.dirname(ckpt), 'teacher.json')
        how = ('Train the demo teacher with `python tools/demo.py --tasks <task> --methods '
               'student --retrain-teacher` (it writes work_dirs/demo/<task>/teacher/), or set '
               'model.teacher.checkpoint to a real one and remove DemoTeacherCheckHook from '
               'custom_hooks.')
        if not osp.isfile(record_file):
            raise RuntimeError(f'Demo teacher {ckpt} has no {record_file} saying how it was '
                               f'trained. {how}')
        with open(record_file) as f:
            record = json.load(f)
        if record.get('quick'):
            raise RuntimeError(f'Demo teacher {ckpt} was trained by `tools/demo.py --quick` '
                               f'({record.get("iters")} iterations): distilling from it means '
                               f'nothing. {how}')
        if record.get('iters', 0) < self.min_iters:
            raise RuntimeError(f'Demo teacher {ckpt} was trained for {record.get("iters")} '
                               f'iterations, fewer than the {self.min_iters} of its config. {how}')
