"""A user's project trains a tat_mm distiller with the task library's own ``tools/train.py``.

The mm* wheels ship their training script as ``<package>/.mim/tools/train.py`` (what ``mim train
mmseg CONFIG`` runs). It parses the config before it imports the config's ``custom_imports``, and
knows nothing of tat_mm: the user's config inherits a tat_mm config by its path and names
``custom_imports=dict(imports=['tat_mm'])``, nothing else. One test per task library, in a
temporary project folder outside the checkout, two iterations on the built-in digits; mmseg's
through openmim's ``mim train mmseg CONFIG``. Then the
three students are exported into folders that do not exist yet, and each library's inference API
runs its student in a process where tat_mm cannot be imported.

``tests/test_install.py`` runs the same user project from a wheel installed into a second
environment, with the pure-Python (``read_base``) config style.
"""
import importlib.util
import os
import os.path as osp
import re
import runpy
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCOPES = {'cls': 'mmpretrain', 'seg': 'mmseg', 'det': 'mmdet'}
#: A distillation term in MMEngine's log: ``loss_tat.backbone.layer4: 0.1234``.
DISTILL_TERM = re.compile(r'loss_tat\w*\.[\w.]+: \d')

#: The user's overrides of a demo distiller config, as an MMEngine text config body.
TEXT_OVERRIDES = '''
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)
model = dict(teacher=dict(checkpoint={teacher!r}))
# the demo's DemoTeacherCheckHook refuses an untrained teacher; keep the figures hook
custom_hooks = [dict(type='DistillVisualizationHook', interval=100, num_images=1)]
train_cfg = dict(max_iters=2, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
'''
#: The same overrides in MMEngine's pure-Python config style.
PYTHON_OVERRIDES = '''
model.teacher.checkpoint = {teacher!r}
custom_hooks = [dict(type='DistillVisualizationHook', interval=100, num_images=1)]
train_cfg.update(max_iters=2, val_interval=1000)
default_hooks.logger.interval = 1
default_hooks.checkpoint.interval = 2
'''

#: Run in a process where ``import tat_mm`` fails: the exported student must not need it.
PLAIN_INFERENCE = r'''
import importlib.abc, sys
class NoTatMM(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'tat_mm':
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, NoTatMM())
import numpy as np
image = np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)
args = sys.argv[1:]
for task, config, checkpoint in zip(args[0::3], args[1::3], args[2::3]):
    if task == 'seg':
        from mmseg.apis import inference_model, init_model
        result = inference_model(init_model(config, checkpoint, device='cpu'), image)
        print('seg', tuple(result.pred_sem_seg.data.shape))
    elif task == 'det':
        from mmdet.apis import inference_detector, init_detector
        # (palette given: else init_detector builds the test dataset for one, here a tat_mm type)
        model = init_detector(config, checkpoint, palette='random', device='cpu')
        result = inference_detector(model, image)
        print('det', tuple(result.pred_instances.bboxes.shape[1:]))
    else:
        from mmengine.registry import DefaultScope
        from mmpretrain import get_model
        from mmpretrain.apis import ImageClassificationInferencer
        with DefaultScope.overwrite_default_scope('mmpretrain'):  # the APIs above set theirs
            model = get_model(config, pretrained=checkpoint, device='cpu')
            result = ImageClassificationInferencer(model, device='cpu')(image)[0]
        print('cls', 0 <= result['pred_label'] < 10)
assert 'tat_mm' not in sys.modules
'''
PLAIN_INFERENCE_OUTPUT = {'seg': 'seg (1, 64, 64)', 'det': 'det (4,)', 'cls': 'cls True'}


def upstream_train_script(scope: str) -> str:
    """The task library's own ``tools/train.py``, as its wheel ships it."""
    return osp.join(osp.dirname(importlib.util.find_spec(scope).origin), '.mim', 'tools',
                    'train.py')


def random_teacher(task: str, path: str, configs_dir: str) -> str:
    """A random-weight checkpoint of the demo teacher (stands in for a trained one)."""
    from tat_mm.distill.teacher import resolve_model_config
    from tat_mm.testing import save_random_checkpoint
    model = resolve_model_config(osp.join(configs_dir, 'demo', task, 'teacher.py'))
    return save_random_checkpoint(SCOPES[task], model, path)


def write_user_project(folder, task: str, teacher: str, base: str, style: str = 'text') -> str:
    """A user's project config inheriting tat_mm's demo TaT config of ``task``.

    Args:
        folder (Path): The project folder.
        task (str): 'cls', 'seg' or 'det'.
        teacher (str): The teacher checkpoint.
        base (str): For ``style='text'`` the path of the tat_mm config to inherit, for
            ``style='python'`` its module (``tat_mm.configs.demo.seg.tat``).
        style (str): 'text' (``_base_``) or 'python' (``read_base``). Defaults to 'text'.

    Returns:
        str: The config's path.
    """
    if style == 'text':
        text = f'_base_ = [{base!r}]\n' + TEXT_OVERRIDES.format(teacher=teacher)
    else:
        text = ('from mmengine.config import read_base\n\nwith read_base():\n'
                f'    from {base} import *  # noqa: F401,F403\n'
                + PYTHON_OVERRIDES.format(teacher=teacher))
    path = folder / 'configs' / f'distill_{task}.py'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def run_checked(args, cwd, timeout=300, env=None) -> str:
    """Run a command; its output, or a test failure showing the end of it."""
    out = subprocess.run(args, cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
                         env=env)
    log = out.stdout + out.stderr
    assert out.returncode == 0, f'{" ".join(map(str, args))} failed:\n{log[-4000:]}'
    return log


def train_upstream(python: str, task: str, config: str, project, env=None,
                   via_mim: bool = False) -> str:
    """Train ``config`` for 2 iterations with the task library's own ``tools/train.py``.

    Args:
        python (str): The interpreter of the environment under test.
        task (str): 'cls', 'seg' or 'det'.
        config (str): The user's distiller config.
        project (Path): The project folder (the working directory).
        env (dict, optional): Environment variables. Defaults to the current ones.
        via_mim (bool): Through openmim, ``mim train <library> CONFIG`` (which runs that
            script), instead of the script itself. Defaults to False.

    Returns:
        str: The path of the checkpoint of iteration 2.
    """
    work_dir = project / 'work_dirs' / task
    command = ([python, '-m', 'mim', 'train', SCOPES[task]] if via_mim
               else [python, upstream_train_script(SCOPES[task])])
    log = run_checked(command + [config, '--work-dir', str(work_dir)], project, env=env)
    assert DISTILL_TERM.search(log), f'no distillation term in the log:\n{log[-3000:]}'
    if via_mim:
        assert f'Training command is {python} {upstream_train_script(SCOPES[task])}' in log, (
            log[-3000:])
    checkpoint = work_dir / 'iter_2.pth'
    assert checkpoint.is_file(), sorted(os.listdir(work_dir))
    return str(checkpoint)


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    """A user's project folder outside the checkout, with a random demo teacher per task."""
    folder = tmp_path_factory.mktemp('my_project')
    teachers = {task: random_teacher(task, str(folder / f'teacher_{task}.pth'),
                                     osp.join(REPO, 'configs')) for task in SCOPES}
    return folder, teachers, {}


@pytest.mark.parametrize('task, via_mim', [('cls', False), ('seg', True), ('det', False)],
                         ids=['cls-train.py', 'seg-mim-train', 'det-train.py'])
def test_upstream_train_script_trains_a_tat_mm_config(task, via_mim, project):
    """``<mm*>/.mim/tools/train.py`` with only ``custom_imports`` naming tat_mm; for seg through
    ``mim train mmseg CONFIG`` (openmim runs the same script; ``tests/test_install.py`` runs
    mmseg's script itself)."""
    folder, teachers, checkpoints = project
    assert osp.isfile(upstream_train_script(SCOPES[task])), 'the mm* wheel ships no train.py'
    # e.g. a clone of tat_mm beside the project: inherit its config by path
    config = write_user_project(folder, task, teachers[task],
                                osp.join(REPO, 'configs', 'demo', task, 'tat.py'))
    checkpoints[task] = train_upstream(sys.executable, task, config, folder, via_mim=via_mim)


def test_exported_students_run_without_tat_mm(project, monkeypatch):
    """tools/export_student.py into folders that do not exist yet; the exported config is plain
    (no distiller, no distiller-only hook), and each library's inference API runs the student in
    a process where ``import tat_mm`` fails."""
    folder, _, checkpoints = project
    if len(checkpoints) < len(SCOPES):
        pytest.skip(f'needs the trained distillers; trained: {sorted(checkpoints)}')
    monkeypatch.syspath_prepend(osp.join(REPO, 'tools'))
    args = []
    for task, checkpoint in sorted(checkpoints.items()):
        exported = folder / 'exported' / task / 'student.pth'
        monkeypatch.setattr(sys, 'argv', ['export_student.py', checkpoint, str(exported)])
        runpy.run_path(osp.join(REPO, 'tools', 'export_student.py'), run_name='__main__')
        config = exported.with_suffix('.py')
        text = config.read_text()
        for distiller_only in ('DemoTeacherCheckHook', 'DistillVisualizationHook', 'Distiller'):
            assert distiller_only not in text, (task, distiller_only)
        args += [task, str(config), str(exported)]
    out = run_checked([sys.executable, '-c', PLAIN_INFERENCE] + args, folder)
    for task in SCOPES:
        assert PLAIN_INFERENCE_OUTPUT[task] in out, out[-3000:]


def test_exported_config_of_a_dafa_distiller_keeps_only_the_students_settings(monkeypatch):
    """DAFA's optimizer constructor, scheduler split and DDP wrapper, and the distiller's hooks,
    are the distiller's: the exported config trains and tests the plain student."""
    from mmengine.config import Config
    monkeypatch.syspath_prepend(osp.join(REPO, 'tools'))
    export = runpy.run_path(osp.join(REPO, 'tools', 'export_student.py'))
    distiller = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'cls', 'tat_dafa.py'))
    assert distiller.optim_wrapper.constructor == 'DAFAOptimWrapperConstructor'
    student = export['student_config'](distiller)
    assert student.model.type == 'ImageClassifier'
    assert 'constructor' not in student.optim_wrapper and 'dafa' not in student.optim_wrapper
    assert student.optim_wrapper.optimizer == distiller.optim_wrapper.optimizer
    assert student.param_scheduler == distiller.param_scheduler.model
    assert 'model_wrapper_cfg' not in student
    assert not student.get('custom_hooks')  # DemoTeacherCheckHook, DistillVisualizationHook, ...
    # only the digits dataset still names a tat_mm type: an optional import
    assert student.custom_imports == dict(imports=['tat_mm'], allow_failed_imports=True)


def test_exported_config_of_a_plain_student_does_not_import_tat_mm(monkeypatch):
    """When nothing left names a tat_mm type (mmseg model, VOC data), ``custom_imports`` goes."""
    from mmengine.config import Config
    monkeypatch.syspath_prepend(osp.join(REPO, 'tools'))
    export = runpy.run_path(osp.join(REPO, 'tools', 'export_student.py'))
    distiller = Config.fromfile(osp.join(REPO, 'configs', 'seg',
                                         'deeplabv3plus_r101_to_r18_voc_tat.py'))
    assert 'tat_mm' in distiller.custom_imports.imports and distiller.get('custom_hooks')
    student = export['student_config'](distiller)
    assert student.model.type == 'EncoderDecoder'
    assert 'custom_imports' not in student and not student.get('custom_hooks')
