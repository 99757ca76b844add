"""What a new user meets first: tools that run without an activated venv, config overrides that
do not silently do nothing, error messages with the real config keys, the upstream inference APIs
on an exported student, and no dataset written into the working directory by building a model."""
import os
import os.path as osp
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from distill_cases import cls_distiller
from tat_mm.cfg_options import check_cfg_options
from tat_mm.distill import resolve_model_config
from tat_mm.testing import free_port

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
VENV = osp.join(REPO, '.venv')


def _env_without_venv():
    """The environment of a shell where the venv was never activated."""
    env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'PYTHON', 'PYTHONPATH')}
    env['PATH'] = os.pathsep.join(p for p in env.get('PATH', '').split(os.pathsep)
                                  if not p.startswith(VENV))
    env['OMP_NUM_THREADS'] = '1'
    return env


def _python_without_stack():
    """The venv's base interpreter, which lacks the stack (skip where that is not the case)."""
    if osp.realpath(sys.prefix) != osp.realpath(VENV):
        pytest.skip('the tests do not run from the repository venv')
    base = osp.join(sys.base_prefix, 'bin', 'python3')
    has_stack = subprocess.run([base, '-c', 'import torch, mmengine'], capture_output=True).returncode == 0
    if has_stack:
        pytest.skip(f'{base} has the stack: nothing to find')
    return base


def test_python_tools_find_the_venv():
    """A Python without the stack re-runs the tool with .venv/bin/python (use_venv.py is what
    every tool imports first; run on its own it is the cheapest tool there is)."""
    base = _python_without_stack()
    out = subprocess.run([base, osp.join(REPO, 'tools/use_venv.py')], capture_output=True, text=True,
                         env=_env_without_venv(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert '.venv/bin/python' in out.stderr  # it says what it did


def test_every_python_tool_imports_use_venv_first():
    """Before anything the bare Python may lack (numpy, torch, mm*, tat_mm)."""
    tools = [osp.join(root, name) for root, _, names in os.walk(osp.join(REPO, 'tools'))
             for name in names if name.endswith('.py') and name != 'use_venv.py']
    third_party = re.compile(r'^\s*(import|from) (numpy|torch|mm\w+|tat_mm|demo)\b')
    for path in tools:
        with open(path) as f:
            lines = f.read().splitlines()
        first = next(i for i, line in enumerate(lines) if third_party.match(line))
        assert any(line.startswith('import use_venv') for line in lines[:first]), path


def test_dist_train_sh_finds_the_venv():
    _python_without_stack()
    env = dict(_env_without_venv(), PORT=str(free_port()))
    out = subprocess.run(['bash', osp.join(REPO, 'tools/dist_train.sh'), 'any_config.py', '1', '--help'],
                         capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'usage: train.py' in out.stdout


def _config_with_variable(tmp_path):
    path = tmp_path / 'distill.py'
    path.write_text("teacher_checkpoint = 'work_dirs/teacher.pth'\n"
                    "model = dict(type='ClsDistiller', student=dict(type='ImageClassifier'),\n"
                    "             teacher=dict(config='t.py', checkpoint=teacher_checkpoint), distill=[])\n"
                    "work_dir = 'work_dirs/x'\n")
    return str(path)


def test_overriding_a_config_variable_is_an_error_naming_the_real_key(tmp_path):
    cfg = Config.fromfile(_config_with_variable(tmp_path))
    with pytest.raises(ValueError, match=r'--cfg-options model\.teacher\.checkpoint=mine\.pth'):
        check_cfg_options(cfg, {'teacher_checkpoint': 'mine.pth'})
    # The real key, and top-level keys the runner reads itself, are fine.
    check_cfg_options(cfg, {'model.teacher.checkpoint': 'mine.pth', 'work_dir': 'elsewhere'})


def test_missing_teacher_checkpoint_names_the_config_key(tmp_path):
    from mmpretrain.registry import MODELS
    cfg = cls_distiller(tmp_path)
    cfg['teacher']['checkpoint'] = str(tmp_path / 'nope.pth')
    with DefaultScope.overwrite_default_scope('mmpretrain'), \
            pytest.raises(FileNotFoundError, match=r'model\.teacher\.checkpoint=PATH'):
        MODELS.build(cfg)


def _exported_student(task, tmp_path, monkeypatch):
    """Save the demo student as a distiller checkpoint holds it, export it with the real tool.

    (Building the distiller and training it into that checkpoint is tests/test_runner.py's part.)

    Returns:
        tuple: (student config path, exported checkpoint path, the student).
    """
    scope = {'cls': 'mmpretrain', 'seg': 'mmseg', 'det': 'mmdet'}[task]
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    config = osp.join(REPO, 'configs', 'demo', task, 'student.py')
    cfg = Config.fromfile(config)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(scope):  # init_model / init_detector set it globally
        student = registry.build(resolve_model_config(cfg))
    src, dst = tmp_path / 'iter_1.pth', tmp_path / 'student.pth'
    # What MMEngine's CheckpointHook writes for a distiller: `student.*` weights, the config text
    # and the dataset meta.
    distill_cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', task, 'tat.py'))
    torch.save({'meta': {'cfg': distill_cfg.pretty_text,
                         'dataset_meta': {'classes': [str(i) for i in range(10)]}},
                'state_dict': {f'student.{k}': v for k, v in student.state_dict().items()}}, src)
    monkeypatch.setattr(sys, 'argv', ['export_student.py', str(src), str(dst)])
    monkeypatch.syspath_prepend(osp.join(REPO, 'tools'))
    runpy.run_path(osp.join(REPO, 'tools', 'export_student.py'), run_name='__main__')
    return config, str(dst), student


def _same_weights(model, student):
    own, ref = model.state_dict(), student.state_dict()
    assert set(own) == set(ref)
    assert all(torch.equal(own[k].cpu(), ref[k]) for k in ref)


@pytest.mark.parametrize('task', ['seg', 'det', 'cls'])
def test_inference_apis_load_the_exported_student(task, tmp_path, monkeypatch):
    """README: the upstream inference APIs take the student's config and the exported student.
    mmdet's init_detector builds the test dataset for its metainfo: that must write no data."""
    config, checkpoint, student = _exported_student(task, tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)  # a fresh working directory: nothing may appear in it
    image = np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)
    if task == 'seg':
        from mmseg.apis import inference_model, init_model
        model = init_model(config, checkpoint, device='cpu')
        result = inference_model(model, image)
        assert tuple(result.pred_sem_seg.data.shape) == (1, 64, 64)
    elif task == 'det':
        from mmdet.apis import inference_detector, init_detector
        model = init_detector(config, checkpoint, device='cpu')
        result = inference_detector(model, image)
        assert result.pred_instances.bboxes.shape[-1] == 4
    else:
        from mmpretrain.apis import ImageClassificationInferencer, init_model
        # (the APIs above leave their scope as the global default: reset it as a fresh process has)
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            model = init_model(config, checkpoint, device='cpu')
            result = ImageClassificationInferencer(model, device='cpu')(image)[0]
        assert 0 <= result['pred_label'] < 10
    _same_weights(model, student)
    assert not (tmp_path / 'data').exists() and not (tmp_path / 'work_dirs').exists()
