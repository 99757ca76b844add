"""End to end: ``tools/demo.py --quick`` for all three tasks writes its table and PNGs.

The full quick demo runs as a user runs it, in its own process (its console output is checked);
the shorter follow-up runs call the tool's ``main`` in this process (each subprocess cost an
interpreter and the stack's imports, ~9 s, more than the run itself).
"""
import json
import os.path as osp
import runpy
import subprocess
import sys

import numpy as np
import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TASKS = ('cls', 'seg', 'det')
FIGURES = ('tat_attention', 'dam_areas', 'predictions', 'loss_curves')

pytest.importorskip('matplotlib')
for lib in ('mmseg', 'mmdet', 'mmpretrain'):
    pytest.importorskip(lib)


@pytest.fixture(scope='module')
def quick_demo(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('demo')
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--quick', '--work-dir', str(work_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return work_dir, proc.stdout


def test_quick_demo_table(quick_demo):
    work_dir, stdout = quick_demo
    table = (work_dir / 'results.md').read_text()
    assert 'QUICK MODE' in table and 'meaningless' in table
    for name in ('classification', 'semantic segmentation', 'detection', 'teacher',
                 'student alone', 'student + KD', 'student + TaT', 'student + TaT + DAM',
                 'student + FitNet'):
        assert name in table
    # progress lines: one per run finished (3 teachers, 5 methods for cls / seg, no KD for det),
    # with an overall ETA once the first run has finished
    assert stdout.count('finished in') == 3 + 5 + 5 + 4
    assert 'demo ETA' in stdout
    # the console is iterations, ETA and metrics: no hook tables, no pkg_resources warnings
    assert 'Hooks will be executed' not in stdout or 'omitted' in stdout
    assert 'pkg_resources' not in stdout
    results = json.loads((work_dir / 'results.json').read_text())
    assert results['quick'] is True
    for task in TASKS:
        res = results['results'][task]
        expected = {'student', 'tat', 'tat_dam', 'fitnet'} | ({'kd'} if task != 'det' else set())
        assert set(res['runs']) == expected
        for values in res['runs'].values():
            assert len(values) == 1 and np.isfinite(values[0])
        assert np.isfinite(res['teacher'])
        assert 'figures_error' not in res
        # every run left its checkpoint and MMEngine's scalar log
        for method in ('student', 'tat', 'tat_dam', 'fitnet'):
            run = json.loads((work_dir / task / method / 'seed0' / 'demo_run.json').read_text())
            assert osp.isfile(run['checkpoint'])
            stamp = osp.basename(run['log_dir'])
            assert osp.isfile(osp.join(run['log_dir'], 'vis_data', f'{stamp}.json'))
        # DistillVisualizationHook drew through the runner's visualizer (LocalVisBackend: PNGs)
        for method, names in (('tat', ['tat_attention']), ('tat_dam', ['dam_areas'])):
            run = json.loads((work_dir / task / method / 'seed0' / 'demo_run.json').read_text())
            for name in names:
                png = osp.join(run['log_dir'], 'vis_data', 'vis_image', f'{name}_3.png')
                assert osp.isfile(png), png


def test_quick_demo_figures(quick_demo):
    import matplotlib.image as mpimg
    work_dir, _ = quick_demo
    for task in TASKS:
        for fig in FIGURES:
            path = work_dir / 'figures' / f'{task}_{fig}.png'
            assert path.is_file(), path
            with open(path, 'rb') as f:
                assert f.read(8) == b'\x89PNG\r\n\x1a\n'
            img = mpimg.imread(str(path))
            assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
            assert img[..., :3].std() > 0.01  # not a blank canvas


@pytest.fixture
def demo_main(monkeypatch):
    """``tools/demo.py``'s ``main`` in this process, from the checkout (as a user runs it); the
    torch thread count it sets (``--threads``, 1) is put back afterwards."""
    import torch
    threads = torch.get_num_threads()
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(osp.join(REPO, 'tools'))
    import demo
    yield demo.main
    torch.set_num_threads(threads)


def test_quick_demo_reuses_teacher(quick_demo, demo_main, capfd):
    """A second run finds the cached teachers and does not retrain them."""
    work_dir, _ = quick_demo
    demo_main(['--quick', '--work-dir', str(work_dir), '--tasks', 'cls', '--methods', 'student',
               '--no-figures'])
    assert 'cls/teacher: reusing' in capfd.readouterr().out
    assert '(cached)' in (work_dir / 'results.md').read_text()


def test_quick_teacher_is_refused_outside_quick_mode(quick_demo, demo_main, monkeypatch):
    """A --quick teacher records how it was trained; the full demo and the demo configs (through
    DemoTeacherCheckHook) refuse it with an error that says how to get a real one."""
    work_dir, _ = quick_demo
    record = json.loads((work_dir / 'cls' / 'teacher' / 'teacher.json').read_text())
    assert record['quick'] is True and record['iters'] == 3 and 'accuracy/top1' in record['val_metrics']
    with pytest.raises(SystemExit) as refused:
        demo_main(['--work-dir', str(work_dir), '--tasks', 'cls', '--methods', 'student',
                   '--no-figures'])
    assert '--quick mode' in str(refused.value.code)
    assert '--retrain-teacher' in str(refused.value.code)
    # the config path: a distillation config pointed at the quick teacher stops before training
    monkeypatch.setattr(sys, 'argv', [
        'train.py', osp.join(REPO, 'configs', 'demo', 'cls', 'tat.py'), '--work-dir',
        str(work_dir / 'train_tat'), '--cfg-options',
        f'model.teacher.checkpoint={work_dir / "cls" / "teacher" / "teacher.pth"}'])
    with pytest.raises(RuntimeError, match=r'tools/demo\.py --quick'):
        runpy.run_path(osp.join(REPO, 'tools', 'train.py'), run_name='__main__')


def test_quick_mode_has_its_own_work_dir():
    sys.path.insert(0, osp.join(REPO, 'tools'))
    import demo
    assert demo.parse_args(['--quick']).work_dir.endswith(osp.join('work_dirs', 'demo_quick'))
    assert demo.parse_args([]).work_dir.endswith(osp.join('work_dirs', 'demo'))
    assert demo.parse_args(['--pair', 'r50']).work_dir.endswith(osp.join('work_dirs', 'demo_r50'))


def test_quick_pretrained_student_demo(tmp_path, demo_main, capfd):
    """--pretrained-student: teacher on the whole train pool, stage 1, then the control and TaT
    continued from the stage-1 checkpoint through load_from (the plain student loads strictly)."""
    demo_main(['--quick', '--pretrained-student', '--tasks', 'cls', '--methods', 'tat',
               '--work-dir', str(tmp_path)])
    out = ''.join(capfd.readouterr())
    assert "Loaded a plain student checkpoint" in out, out[-4000:]
    table = (tmp_path / 'results.md').read_text()
    assert 'QUICK MODE' in table and '| control: student alone continued | 1 |' in table
    assert '| + TaT | 1 |' in table and 'stage 1 (student alone, from scratch)' in table
    record = json.loads((tmp_path / 'records' / 'cls' / 'r50' / 'tat' / 'seed0.json').read_text())
    assert record['init']['sha256'] == json.loads(
        (tmp_path / 'records' / 'cls' / 'stage1' / 'seed0.json').read_text())['checkpoint_sha256']
