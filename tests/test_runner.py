"""End to end through MMEngine runners and our tools: resume, export, distributed training."""
import os
import os.path as osp
import runpy
import subprocess
import sys
from glob import glob

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import tat_mm  # noqa: F401
from distill_cases import CLS_STUDENT, cls_runner_config
from tat_mm.testing import offline_model_config, free_port

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


class RecordLosses(Hook):
    """Keeps the log dict of every train iteration."""

    def __init__(self):
        self.losses = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses[runner.iter + 1] = {k: float(v) for k, v in outputs.items()}


def run(cfg: dict, name: str, **overrides) -> RecordLosses:
    cfg = Config(dict(cfg, experiment_name=name, **overrides))
    runner = Runner.from_cfg(cfg)
    recorder = RecordLosses()
    runner.register_hook(recorder)
    runner.train()
    return recorder


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """An uninterrupted 4-iteration run, and a 2-iteration run resumed to 4 iterations."""
    tmp = tmp_path_factory.mktemp('runner')
    base = cls_runner_config(tmp, tmp / 'full', max_iters=4)
    full = run(base, 'full')
    first_half = run(dict(base, work_dir=str(tmp / 'half')), 'half', train_cfg=dict(
        base['train_cfg'], max_iters=2))
    resumed = run(dict(base, work_dir=str(tmp / 'half')), 'resumed', resume=True,
                  load_from=str(tmp / 'half' / 'iter_2.pth'))
    return dict(tmp=tmp, base=base, full=full, first_half=first_half, resumed=resumed)


@pytest.fixture(scope='module')
def exported(trained):
    """tools/export_student.py (the command line) on the 2-iteration distiller checkpoint."""
    src, dst = trained['tmp'] / 'half' / 'iter_2.pth', trained['tmp'] / 'student.pth'
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/export_student.py'), str(src),
                          str(dst)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return dst


def run_tool(monkeypatch, tool: str, *args) -> None:
    """``tools/<tool>`` with ``args``, in this process (saves an interpreter and the stack's
    imports per call)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(osp.join(ROOT, 'tools'))
    monkeypatch.setattr(sys, 'argv', [tool, *map(str, args)])
    runpy.run_path(osp.join(ROOT, 'tools', tool), run_name='__main__')


def test_resume_continues_exactly(trained):
    full, half, resumed = trained['full'].losses, trained['first_half'].losses, trained['resumed'].losses
    assert sorted(full) == [1, 2, 3, 4] and sorted(half) == [1, 2] and sorted(resumed) == [3, 4]
    for it in (1, 2):
        assert half[it] == pytest.approx(full[it], rel=1e-5)
    for it in (3, 4):
        assert set(resumed[it]) == set(full[it])
        for key in full[it]:
            assert resumed[it][key] == pytest.approx(full[it][key], rel=1e-4, abs=1e-6), (it, key)
    # the distillation terms are logged under their tap names
    assert {'loss_tat.backbone.layer4', 'loss_kd.head.fc', 'loss'} <= set(full[4])


def test_checkpoint_has_no_teacher(trained):
    ckpt = torch.load(trained['tmp'] / 'half' / 'iter_2.pth', map_location='cpu', weights_only=False)
    keys = list(ckpt['state_dict'])
    assert keys and not any('teacher' in k for k in keys)
    assert any(k.startswith('student.backbone.') for k in keys)
    assert 'optimizer' in ckpt and 'message_hub' in ckpt


def test_export_student_loads_into_plain_mmpretrain_model(trained, exported):
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    src, dst = trained['tmp'] / 'half' / 'iter_2.pth', exported
    init_default_scope('mmpretrain')
    plain = MODELS.build(offline_model_config(CLS_STUDENT, 10))
    state = torch.load(dst, map_location='cpu')['state_dict']  # a plain weights-only checkpoint
    result = plain.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    load_checkpoint(plain, str(dst), strict=True)  # and MMEngine's loader accepts it

    distiller = MODELS.build(Config(trained['base']).model)
    load_checkpoint(distiller, str(src), strict=True)
    plain.eval(), distiller.eval()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(plain(images, mode='tensor'), distiller(images, mode='tensor'))
        ours = distiller.predict(images)
        theirs = plain.predict(images)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a.pred_score, b.pred_score)


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


def test_dist_train_matches_single_process(tmp_path, monkeypatch):
    """tools/dist_train.sh with 2 CPU processes (gloo) equals one process with the same total batch
    (tools/train.py, in this process)."""
    base = cls_runner_config(tmp_path, tmp_path / 'x', max_iters=4, batch_size=2)
    cfg_path = tmp_path / 'cfg.py'
    Config(base).dump(str(cfg_path))
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', PORT=str(free_port()))
    dist = subprocess.run(['bash', osp.join(ROOT, 'tools/dist_train.sh'), str(cfg_path), '2',
                           '--work-dir', str(tmp_path / 'dist')],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert dist.returncode == 0, dist.stdout[-3000:] + dist.stderr[-3000:]
    run_tool(monkeypatch, 'train.py', cfg_path, '--work-dir', tmp_path / 'single',
             '--cfg-options', 'train_dataloader.batch_size=4', 'default_hooks.checkpoint.interval=4',
             'experiment_name=single')
    dist_w, single_w = _weights(tmp_path / 'dist' / 'iter_4.pth'), _weights(tmp_path / 'single' / 'iter_4.pth')
    init_w = _weights(tmp_path / 'dist' / 'iter_2.pth')
    moved = sum((single_w[k].float() - init_w[k].float()).norm()**2 for k in single_w)**0.5
    diff = sum((single_w[k].float() - dist_w[k].float()).norm()**2 for k in single_w)**0.5
    assert moved > 0
    assert diff < 1e-3 * moved, f'distributed and single-process weights differ: {diff} vs step {moved}'
    assert glob(str(tmp_path / 'dist' / '*' / '*.log'))


def test_tools_test_evaluates_distiller_and_exported_student(trained, exported, tmp_path,
                                                            monkeypatch, capfd):
    """tools/test.py scores the distiller (its student) and the exported plain student alike."""
    tmp = trained['tmp']
    cfg_path = tmp_path / 'distill.py'
    Config(trained['base']).dump(str(cfg_path))
    capfd.readouterr()
    run_tool(monkeypatch, 'test.py', cfg_path, tmp / 'half' / 'iter_2.pth', '--work-dir',
             tmp_path / 't1', '--cfg-options', 'log_level=INFO', 'experiment_name=t1')
    out = ''.join(capfd.readouterr())
    distilled = [line for line in out.splitlines() if 'accuracy/top1' in line]
    assert distilled, out[-2000:]

    # the plain mmpretrain student config + the exported checkpoint give the same accuracy
    plain_cfg = dict(trained['base'], model=Config(trained['base']).model.student)
    plain_cfg['model']['data_preprocessor'] = trained['base']['data_preprocessor']
    plain_path = tmp_path / 'plain.py'
    Config(plain_cfg).dump(str(plain_path))
    run_tool(monkeypatch, 'test.py', plain_path, exported, '--work-dir', tmp_path / 't2',
             '--cfg-options', 'log_level=INFO', 'experiment_name=t2')
    plain = [line for line in ''.join(capfd.readouterr()).splitlines() if 'accuracy/top1' in line]
    score = lambda line: line.split('accuracy/top1:')[1].split()[0]  # noqa: E731
    assert score(plain[-1]) == score(distilled[-1])
