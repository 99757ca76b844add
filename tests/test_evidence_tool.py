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
