"""tools/evidence.py: where runs go, which student each method is paired with, the interval."""
import importlib
import json
import os
import os.path as osp
import sys

import numpy as np
import pytest
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))
evidence = importlib.import_module('evidence')


def test_paired_interval_is_the_t_interval_over_seeds():
    diffs = [1.0, -2.0, 3.5, 0.5, 2.0]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5
    half = 2.776 * sd / n ** 0.5  # Student's t, 97.5 % quantile, 4 degrees of freedom
    got = evidence.paired_interval(diffs)
    np.testing.assert_allclose(got, (mean, mean - half, mean + half), rtol=1e-3)


def test_student_variants_are_shared_by_both_pairs_and_paired_by_optimiser(tmp_path):
    args = evidence.parse_args(['--tasks', 'seg', '--methods', 'student_sgd0.1', 'tat_sgd0.1',
                                '--seeds', '0', '--results', str(tmp_path)])
    runs = evidence.run_list(args)
    assert ('seg', '-', 'student_sgd0.1', 0) in runs
    assert {('seg', 'r18', 'tat_sgd0.1', 0), ('seg', 'r50', 'tat_sgd0.1', 0)} <= set(runs)
    assert not any(r[2] == 'student_sgd0.1' and r[1] != '-' for r in runs)
    assert evidence.baseline('tat_sgd0.1') == 'student_sgd0.1'
    assert evidence.baseline('tat_T16') == 'student'
    assert evidence.result_path('R', 'seg', '-', 'student_sgd0.1', 3) == \
        osp.join('R', 'seg', 'student_sgd0.1', 'seed3.json')
    assert 'seg/student/' in evidence.run_dir('W', 'seg', '-', 'student_sgd0.1', 0) + '/'


def _write(results, task, pair, method, seed, test):
    path = evidence.result_path(str(results), task, pair, method, seed)
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(dict(task=task, pair=pair, method=method, seed=seed, val=test, test=test), f)


def test_summary_pairs_each_method_with_the_student_of_its_optimiser(tmp_path):
    for seed in range(3):
        _write(tmp_path, 'seg', '-', 'student', seed, 20.0 + seed)
        _write(tmp_path, 'seg', 'r50', 'tat', seed, 10.0 + seed)
        _write(tmp_path, 'seg', '-', 'student_sgd0.1', seed, 50.0 + seed)
        _write(tmp_path, 'seg', 'r50', 'tat_sgd0.1', seed, 48.0 + seed)
    table = evidence.summarize(str(tmp_path))
    tat = next(line for line in table.splitlines() if line.startswith('| r50 | + TaT |'))
    tat_sgd = next(line for line in table.splitlines() if 'TaT, SGD lr 0.1' in line)
    assert '-10.00 [-10.00, -10.00]' in tat  # vs the AdamW student alone
    assert '-2.00 [-2.00, -2.00]' in tat_sgd  # vs the SGD student alone, not the AdamW one
    assert any('student alone, SGD lr 0.1' in line and '51.00' in line
               for line in table.splitlines())


@pytest.mark.parametrize('method', ['student_sgd0.1', 'tat_sgd0.1'])
def test_sgd_variant_options_reach_the_config(method):
    trained, opts = evidence.VARIANTS[method]
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'seg', f'{trained}.py'))
    cfg.merge_from_dict(opts)
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.optim_wrapper.optimizer.lr == 0.1 and cfg.optim_wrapper.optimizer.momentum == 0.9
    assert cfg.optim_wrapper.optimizer.weight_decay == 1e-4  # kept from the AdamW runs


def test_sgd_teacher_pair_trains_its_own_teacher_and_its_students_use_it(tmp_path):
    work = str(tmp_path)
    cfg_name, opts = evidence.run_options('seg', 'r50_sgd0.1', 'teacher', 0, work)
    assert cfg_name == 'teacher_r50'
    assert opts['optim_wrapper.optimizer.type'] == 'SGD' and opts['optim_wrapper.optimizer.lr'] == 0.1
    assert evidence.run_dir(work, 'seg', 'r50_sgd0.1', 'teacher', 0) != \
        evidence.run_dir(work, 'seg', 'r50', 'teacher', 0)  # never overwrites the AdamW teacher
    cfg_name, opts = evidence.run_options('seg', 'r50_sgd0.1', 'tat_sgd0.1', 3, work)
    assert cfg_name == 'tat'
    assert opts['model.teacher.config'].endswith(osp.join('seg', 'teacher_r50.py'))
    assert opts['model.teacher.checkpoint'] == osp.join(
        evidence.run_dir(work, 'seg', 'r50_sgd0.1', 'teacher', 0), 'teacher.pth')
    # The protocol's own teacher is untouched: AdamW, from its own work dir.
    _, opts = evidence.run_options('seg', 'r50', 'teacher', 0, work)
    assert 'optim_wrapper.optimizer.type' not in opts
    assert evidence.baseline('tat_sgd0.1') == 'student_sgd0.1'
    assert evidence.result_path('R', 'seg', 'r18_sgd0.1', 'teacher', 0) == \
        osp.join('R', 'seg', 'teacher_r18_sgd0.1.json')


# --------------------------------------------------------------------------- protocol v3
v3 = importlib.import_module('evidence_v3')


def _v3_args(tmp_path, *extra):
    return evidence.parse_args(['--protocol', 'v3', '--results', str(tmp_path / 'results'),
                                '--work-dir', str(tmp_path / 'work'), *extra])


def _v3_write(args, run, **fields):
    path = v3.result_path(args.results, run)
    os.makedirs(osp.dirname(path), exist_ok=True)
    record = dict(task=run[0], kind=run[1], method=run[2], seed=run[3], val=50.0, test=50.0,
                  train_time_s=100.0, schedule=dict(iters=150), checkpoint=f'{run[1]}{run[3]}.pth',
                  checkpoint_sha256='0' * 64, train_size='1600 canvases')
    record.update(fields)
    with open(path, 'w') as f:
        json.dump(record, f)


def test_v3_plan_order_and_dependencies(tmp_path):
    args = _v3_args(tmp_path, '--seeds', '0', '1')
    runs = v3.plan(args)
    assert args.tasks == ['cls', 'det', 'seg'] and runs[0] == ('seg', 'teacher', 'teacher', 0, '')
    assert runs[1:3] == [('cls', 'teacher', 'teacher', 0, ''), ('cls', 'stage1', 'student', 0, '')]
    assert ('det', 'stage2', 'kd', 0, '') not in runs  # RetinaNet: no softmax KD, as in v1
    assert len([r for r in runs if r[1] == 'stage2']) == 2 * (5 + 4 + 5)
    assert not any(r[1] == 'time' for r in runs)
    control, tat = ('cls', 'stage2', 'student', 1, ''), ('cls', 'stage2', 'tat', 1, '')
    assert v3.ready(('cls', 'stage1', 'student', 1, ''), args.results)
    assert not v3.ready(('cls', 'lr', 'student', 0, 0.3), args.results)
    _v3_write(args, ('cls', 'stage1', 'student', 0, ''))
    _v3_write(args, ('cls', 'stage1', 'student', 1, ''))
    assert v3.ready(('cls', 'lr', 'student', 0, 0.3), args.results)
    assert not v3.ready(control, args.results)  # the learning rate is not chosen yet
    for factor, val in zip(v3.LR_FACTORS, (40.0, 60.0, 60.0)):
        _v3_write(args, ('cls', 'lr', 'student', 0, factor), val=val)
    assert v3.chosen_lr_factor(args.results, 'cls') == 0.3  # a tie goes to the smaller rate
    assert v3.ready(control, args.results) and not v3.ready(tat, args.results)  # no teacher yet
    _v3_write(args, ('cls', 'teacher', 'teacher', 0, ''))
    assert v3.ready(tat, args.results)


def test_v3_stage2_options_reach_the_config(tmp_path):
    args = _v3_args(tmp_path)
    _v3_write(args, ('seg', 'stage1', 'student', 2, ''), checkpoint='seg/stage1/s2/iter_600.pth')
    for factor in v3.LR_FACTORS:
        _v3_write(args, ('seg', 'lr', 'student', 0, factor), val=factor)  # 1.0 wins
    _v3_write(args, ('seg', 'stage1', 'student', 0, ''))
    _v3_write(args, ('seg', 'teacher', 'teacher', 0, ''), checkpoint_sha256='a' * 64)
    name, opts, info = v3.run_options(('seg', 'stage2', 'tat', 2, ''), args)
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'seg', f'{name}.py'))
    cfg.merge_from_dict(opts)
    assert name == 'tat' and cfg.load_from == osp.join(args.work_dir, 'seg/stage1/s2/iter_600.pth')
    assert cfg.train_cfg.max_iters == 300 and cfg.param_scheduler[1].T_max == 300
    assert cfg.param_scheduler[1].end == 300 and cfg.default_hooks.checkpoint.interval == 300
    assert cfg.optim_wrapper.optimizer.type == 'SGD' and cfg.optim_wrapper.optimizer.lr == 0.1
    assert cfg.model.teacher.config.endswith(osp.join('seg', 'teacher_r50.py'))
    assert info['teacher']['sha256'] == 'a' * 64 and info['init']['sha256'] == '0' * 64
    # the protocol's runs train as v1's: no DistillHealthHook (it would add to the timed run)
    assert [h['type'] for h in cfg.custom_hooks] == ['DemoTeacherCheckHook',
                                                      'DistillVisualizationHook']
    name, opts, _ = v3.run_options(('seg', 'teacher', 'teacher', 0, ''), args)
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'seg', f'{name}.py'))
    cfg.merge_from_dict(opts)
    assert cfg.train_dataloader.dataset.num_train == 1600 == cfg.test_dataloader.dataset.num_train
    assert cfg.train_cfg.max_iters == 1200 and cfg.train_cfg.val_interval == 200
    _, opts, _ = v3.run_options(('cls', 'teacher', 'teacher', 0, ''), args)
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'cls', 'teacher_r50.py'))
    cfg.merge_from_dict(opts)
    assert cfg.train_dataloader.dataset.indices is None  # the whole train pool
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'


def test_v3_refuses_a_checkpoint_other_than_the_recorded_one(tmp_path):
    (tmp_path / 'teacher.pth').write_bytes(b'retrained')
    info = dict(init=None, teacher=dict(path='teacher.pth', sha256=v3.sha256(tmp_path / 'teacher.pth')))
    v3.verify_checkpoints(info, str(tmp_path))
    (tmp_path / 'teacher.pth').write_bytes(b'retrained again')
    with pytest.raises(SystemExit, match='refusing to pair'):
        v3.verify_checkpoints(info, str(tmp_path))


def test_v3_time_matched_control_is_planned_only_for_a_gain(tmp_path):
    args = _v3_args(tmp_path, '--tasks', 'cls', '--seeds', '0', '1', '2')
    for seed in range(3):
        _v3_write(args, ('cls', 'stage2', 'student', seed, ''), test=80.0 + seed,
                  train_time_s=30.0, schedule=dict(iters=150))
        _v3_write(args, ('cls', 'stage2', 'tat', seed, ''), test=82.0 + seed, train_time_s=60.0)
        _v3_write(args, ('cls', 'stage2', 'fitnet', seed, ''), test=80.0 + (-1) ** seed)
    timed = [r for r in v3.plan(args) if r[1] == 'time']
    assert timed == [('cls', 'time', 'tat', s, '300') for s in range(3)]  # 60 s / (30 s / 150)
    table = v3.summarize(args.results, seeds=(0, 1, 2))
    row = next(line for line in table.splitlines() if line.startswith('| + TaT |'))
    assert '+2.00 [+2.00, +2.00]' in row
    for seed in range(3):
        _v3_write(args, ('cls', 'time', 'tat', seed, '300'), test=81.0 + seed,
                  schedule=dict(iters=300))
    table = v3.summarize(args.results, seeds=(0, 1, 2))
    assert 'time-matched control for tat (300 it.)' in table
    assert 'H4, each method against its time-matched control (paired): TaT +1.00 [+1.00, +1.00]' in table
