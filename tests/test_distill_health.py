"""DistillHealthHook: teacher check, gradient shares, method statistics and warnings; on the demo
distillers through real MMEngine runners, and its pieces against hand computations."""
import glob
import json
import math
import os
import os.path as osp
import sys
import types

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.runner import Runner

import tat_mm  # noqa: F401
from tat_mm.engine import DistillHealthHook, gradient_shares
from tat_mm.engine.gradient_shares import COMBINED
from tat_mm.losses import (DAFADistillLoss, DAMDistillLoss, HierarchicalTaTLoss, TaTLoss,
                           record_statistics, tat_attention)
from tat_mm.losses.tat_attention import attention_statistics
from tat_mm.testing import save_random_checkpoint, free_port

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))
import demo  # noqa: E402  (tools/demo.py: the demo's configs and overrides)

SCOPES = dict(cls='mmpretrain', seg='mmseg', det='mmdet')


# --------------------------------------------------------------------------- pieces, by hand
def test_gradient_shares_equal_hand_computation():
    """Linear student W (2x3): task ||Wx - y||^2, terms l_i ||Wx - t_i||^2. By hand the
    gradients are 2 (Wx - y) x^T and 2 l_i (Wx - t_i) x^T, so ratio = l_i |Wx - t_i| / |Wx - y|
    and cosine = cos(Wx - t_i, Wx - y)."""
    torch.manual_seed(0)
    student = nn.Linear(3, 2, bias=False).double()
    connector = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))  # not a student parameter
    x, y = torch.randn(3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    t1, t2 = torch.randn(2, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    out = student(x)
    losses = {
        'loss_cls': [(out - y).pow(2).sum() / 2, (out - y).pow(2).sum() / 2],  # a list, like mmdet
        'acc': torch.tensor(0.5),  # no 'loss' in the key: not optimised, ignored
        'loss_tat.fc': 0.3 * (out - t1).pow(2).sum(),
        'loss_kd.fc': 2.0 * (out - t2).pow(2).sum(),
        'loss_dam_gt.fc': connector ** 2,  # no path to the student: left out
    }
    shares = gradient_shares(losses, ['loss_tat.fc', 'loss_kd.fc', 'loss_dam_gt.fc'],
                             list(student.parameters()), combined=True)
    assert set(shares) == {'loss_tat.fc', 'loss_kd.fc', COMBINED}
    wx = out.detach()

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    for key, weight, target in (('loss_tat.fc', 0.3, t1), ('loss_kd.fc', 2.0, t2)):
        assert shares[key].ratio == pytest.approx(weight * float((wx - target).norm())
                                                  / float((wx - y).norm()), rel=1e-12)
        assert shares[key].cosine == pytest.approx(cos(wx - target, wx - y), rel=1e-12)
        assert shares[key].task_norm == pytest.approx(float(2 * (wx - y).norm() * x.norm()))
    both = 0.3 * (wx - t1) + 2.0 * (wx - t2)
    assert shares[COMBINED].ratio == pytest.approx(float(both.norm() / (wx - y).norm()), rel=1e-12)
    assert shares[COMBINED].cosine == pytest.approx(cos(both, wx - y), rel=1e-12)
    # nothing went into .grad, and the graph is still there for the training step's backward
    assert student.weight.grad is None
    sum(v for k, v in losses.items() if k == 'loss_tat.fc').backward()
    assert student.weight.grad is not None


def test_gradient_shares_errors_say_what_is_wrong():
    w = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match='no task loss'):
        gradient_shares({'loss_tat.x': w.sum()}, ['loss_tat.x'], [w])
    with pytest.raises(ValueError, match='no parameters'):
        gradient_shares({'loss_cls': w.sum()}, [], [])


def _explicit_statistics(query, key, mask=None, temperature=1.0):
    logits = query @ key.transpose(-2, -1) / temperature
    n = torch.full(logits.shape[:-1], float(key.shape[-2]), dtype=logits.dtype)
    if mask is not None:
        logits = logits.masked_fill(~mask, float('-inf'))
        n = mask.expand_as(logits).sum(-1).to(logits.dtype)
    weights = logits.softmax(-1)
    entropy = -(weights * weights.clamp_min(1e-30).log()).sum(-1) / n.log()
    return weights.amax(-1).mean(), entropy.mean()


def test_attention_statistics_equal_explicit_softmax():
    torch.manual_seed(0)
    query, key = torch.randn(2, 3, 10, 4), torch.randn(2, 3, 7, 4)
    mask = torch.ones(1, 3, 1, 7, dtype=torch.bool)
    mask[0, 1, 0, 5:] = False  # a group whose last two keys are padding
    for kwargs in (dict(), dict(mask=mask), dict(temperature=4.0)):
        stats = attention_statistics(query, key, kwargs.get('mask'), kwargs.get('temperature', 1.0))
        max_weight, entropy = _explicit_statistics(query, key, **kwargs)
        assert float(stats['attn_max']) == pytest.approx(float(max_weight), rel=1e-5)
        assert float(stats['attn_entropy']) == pytest.approx(float(entropy), rel=1e-5)
    # one-hot attention: max weight 1, entropy 0; uniform: 1 / n and 1
    eye = torch.eye(5).unsqueeze(0) * 100
    stats = attention_statistics(eye, eye)
    assert float(stats['attn_max']) == pytest.approx(1.0) and float(stats['attn_entropy']) < 1e-6
    stats = attention_statistics(torch.zeros(1, 5, 3), torch.zeros(1, 5, 3))
    assert float(stats['attn_max']) == pytest.approx(0.2)
    assert float(stats['attn_entropy']) == pytest.approx(1.0)
    # many queries: an evenly spaced subset of rows, still the right kind of number
    stats = attention_statistics(torch.randn(1, 4000, 8), torch.randn(1, 4000, 8),
                                 max_elements=4000 * 10)
    assert 1 / 4000 < float(stats['attn_max']) <= 1 and 0 <= float(stats['attn_entropy']) <= 1
    # tat_attention fills the dict it is given and returns what it returns without it
    filled = {}
    assert torch.equal(tat_attention(query, key, key, mask, statistics=filled),
                       tat_attention(query, key, key, mask))
    assert set(filled) == {'attn_max', 'attn_entropy'}


@pytest.mark.parametrize('make_loss, terms', [
    (lambda: TaTLoss(8, 8), {'loss'}),
    (lambda: HierarchicalTaTLoss(8, 8, pool_size=2, patch_size=2, group_size=2),
     {'loss_tat_pg', 'loss_tat_ap'}),
    (lambda: DAMDistillLoss(
        feature_loss=dict(type='HierarchicalTaTLoss', pool_size=2, patch_size=2),
        student_channels=8, teacher_channels=8),
     {'loss_dam', 'loss_feat_tat_pg', 'loss_feat_tat_ap'}),
])
def test_recording_statistics_changes_no_loss(make_loss, terms):
    """Same value and gradients with recording on and off; statistics only while on."""
    torch.manual_seed(0)
    loss = make_loss().double()
    student, teacher = torch.randn(2, 8, 6, 6, dtype=torch.float64, requires_grad=True), \
        torch.randn(2, 8, 6, 6, dtype=torch.float64)
    results = []
    for record in (False, True):
        record_statistics(loss, record)
        student.grad = None
        value = loss(student, teacher)
        total = sum(value.values()) if isinstance(value, dict) else value
        total.backward()
        results.append((float(total), student.grad.clone()))
        assert (set(loss.last_statistics) == terms) if record else not loss.last_statistics
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])
    stats = loss.last_statistics
    if 'loss_dam' in terms:
        assert set(stats['loss_dam']) == {'dam_area_student', 'dam_area_teacher',
                                          'dam_area_overlap', 'dam_area_mask'}
        assert 0 <= float(stats['loss_dam']['dam_area_overlap']) <= float(
            stats['loss_dam']['dam_area_student'])
    for term in terms - {'loss_dam'}:
        assert set(stats[term]) == {'attn_max', 'attn_entropy'}


# --------------------------------------------------------------------------- demo runners
class RecordLosses(Hook):
    """Keeps the log dict of every train iteration."""

    def __init__(self):
        self.losses = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses[runner.iter + 1] = {k: float(v) for k, v in outputs.items()}


@pytest.fixture(scope='module')
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp('health')


def random_teacher(task: str, tmp) -> str:
    path = tmp / f'{task}_random_teacher.pth'
    if not path.exists():
        model = Config.fromfile(demo.config_path(task, 'teacher')).model
        save_random_checkpoint(SCOPES[task], model.to_dict(), path)
    return str(path)


def train(task: str, method: str, tmp, name: str, hooks=(), iters: int = 3, teacher=None,
          options=None) -> tuple:
    """A quick-mode demo run (16 training / 8 val images) with ``hooks`` as custom_hooks."""
    opts = demo.run_options(task, method, 0, str(tmp), True, teacher or random_teacher(task, tmp))
    opts.update({'custom_hooks': list(hooks), 'train_cfg.max_iters': iters,
                 'train_cfg.val_interval': iters, 'default_hooks.checkpoint': None,
                 **(options or {})})
    cfg = demo.build_cfg(task, method, opts, str(tmp / name))
    runner = Runner.from_cfg(cfg)
    recorder = RecordLosses()
    runner.register_hook(recorder)
    runner.train()
    stamp = osp.basename(runner.log_dir)
    with open(osp.join(runner.log_dir, f'{stamp}.log')) as f:
        log = f.read()
    with open(osp.join(runner.log_dir, 'vis_data', 'scalars.json')) as f:
        scalars = [json.loads(line) for line in f]
    return runner, recorder.losses, log, scalars


TEACHER_METRICS = dict(cls='teacher/accuracy/top1', seg='teacher/mIoU', det='teacher/coco/bbox_mAP')
HEALTH = dict(type='DistillHealthHook', interval=1, teacher_check='warn')
ITERS = 2


@pytest.fixture(scope='module')
def cls_runs(tmp):
    """The cls TaT demo with the hook (Local + TensorBoard backends), without it, and with
    interval=0 and no teacher check."""
    visualizer = dict(type='UniversalVisualizer', vis_backends=[
        dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])
    return dict(
        health=train('cls', 'tat', tmp, 'cls_health', [HEALTH], ITERS,
                     options={'visualizer': visualizer}),
        plain=train('cls', 'tat', tmp, 'cls_plain', [], ITERS),
        off=train('cls', 'tat', tmp, 'cls_off', [dict(type='DistillHealthHook', interval=0,
                                                      teacher_check=False)], ITERS))


def check_health_run(task: str, log: str, scalars: list, expected: list) -> None:
    """Every expected scalar at every iteration, in range, in the text log too; the teacher's
    score at step 0."""
    health = [row for row in scalars if any(k.startswith('health/') for k in row)]
    assert [row['step'] for row in health] == list(range(1, ITERS + 1))
    for row in health:
        for key in expected:
            assert math.isfinite(row[f'health/{key}']), key
        for key, value in row.items():
            if key.startswith('health/grad_ratio.'):
                assert value >= 0
            if key.startswith(('health/grad_cos.', 'health/attn_', 'health/dam_area_')):
                assert -1 <= value <= 1
    # loss_dam_gt trains only DAM (no path to the student): no gradient share for it
    assert not any('grad_ratio.dam_gt' in k for row in health for k in row)
    assert log.count('Distillation health at iteration') == ITERS
    term = expected[0].split('.', 1)[1]
    assert f'    {term}: grad_ratio ' in log  # the text log groups the numbers by term
    teacher_rows = [row for row in scalars if TEACHER_METRICS[task] in row]
    assert len(teacher_rows) == 1 and teacher_rows[0]['step'] == 0
    assert 'Teacher check on 8 val samples' in log and f'{TEACHER_METRICS[task]}: ' in log
    assert f'chance level of {TEACHER_METRICS[task][len("teacher/"):]}: ' in log


def test_hook_on_cls_demo_distiller(cls_runs):
    _, _, log, scalars = cls_runs['health']
    check_health_run('cls', log, scalars, ['grad_ratio.tat.backbone.layer4',
                                           'grad_cos.tat.backbone.layer4',
                                           'attn_max.tat.backbone.layer4',
                                           'attn_entropy.tat.backbone.layer4'])


# task, demo config, a few of the terms (student tap) whose statistics must be logged
DEMO_CASES = [
    ('seg', 'tat_dam', ['grad_ratio.dam_feat_tat_pg.decode_head.sep_bottleneck',
                        'grad_cos.dam_feat_tat_ap.decode_head.sep_bottleneck',
                        'grad_ratio.dam.decode_head.sep_bottleneck',
                        'attn_max.dam_feat_tat_pg.decode_head.sep_bottleneck',
                        'attn_entropy.dam_feat_tat_ap.decode_head.sep_bottleneck',
                        'dam_area_student.dam.decode_head.sep_bottleneck',
                        'dam_area_teacher.dam.decode_head.sep_bottleneck',
                        'dam_area_overlap.dam.decode_head.sep_bottleneck',
                        'dam_area_mask.dam.decode_head.sep_bottleneck']),
    ('det', 'tat_dam', ['grad_ratio.dam_feat.neck.0', 'grad_cos.dam_feat.neck.1',
                        'attn_max.dam_feat.neck.0', 'dam_area_mask.dam.neck.1']),
]


@pytest.mark.parametrize('task, method, expected', DEMO_CASES, ids=[c[0] for c in DEMO_CASES])
def test_hook_on_seg_det_demo_distillers(task, method, expected, tmp):
    _, _, log, scalars = train(task, method, tmp, f'{task}_health', [HEALTH], ITERS)
    check_health_run(task, log, scalars, expected)


def test_hook_leaves_training_unchanged(cls_runs):
    """Gradient shares and statistics come from the step's own graph: the run is the same."""
    with_hook, losses, _, _ = cls_runs['health']
    without, plain_losses, _, _ = cls_runs['plain']
    assert losses == plain_losses and len(losses) == ITERS
    state, plain_state = with_hook.model.state_dict(), without.model.state_dict()
    assert all(torch.equal(state[k], plain_state[k]) for k in plain_state)
    assert 'parse_losses' not in vars(with_hook.model)  # the probe's wrapper is gone


def test_interval_zero_adds_nothing(cls_runs):
    runner, losses, log, scalars = cls_runs['off']
    assert losses == cls_runs['plain'][1]
    assert not any(k.startswith(('health/', 'teacher/')) for row in scalars for k in row)
    assert 'Distillation health' not in log and 'Teacher check' not in log
    loss = runner.model.pairs[0].losses[0]
    assert loss.record_statistics is False and loss.last_statistics == {}


def test_tensorboard_backend_gets_the_scalars(cls_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    runner = cls_runs['health'][0]
    events = glob.glob(osp.join(runner.log_dir, 'vis_data', 'events.out.tfevents.*'))
    assert events
    accumulator = EventAccumulator(osp.dirname(events[0]))
    accumulator.Reload()
    tags = accumulator.Tags()['scalars']
    ratios = accumulator.Scalars('health/grad_ratio.tat.backbone.layer4')
    assert [e.step for e in ratios] == list(range(1, ITERS + 1))
    assert 'health/attn_max.tat.backbone.layer4' in tags and TEACHER_METRICS['cls'] in tags


@pytest.mark.parametrize('task', ['cls', 'seg', 'det'])
def test_random_teacher_stops_the_run(task, tmp):
    # cls on the whole val split (359 digits): 8 images are too few to tell 10 % from 15 %
    options = {'val_dataloader.dataset.indices': None} if task == 'cls' else {}
    with pytest.raises(RuntimeError, match='at chance level') as error:
        train(task, 'tat', tmp, f'{task}_random', [dict(type='DistillHealthHook')],
              options=options)
    assert TEACHER_METRICS[task][len('teacher/'):] in str(error.value)
    assert "teacher_check='warn'" in str(error.value)


def test_hook_under_ddp_changes_nothing_and_rank_0_writes(tmp):
    """tools/dist_train.sh, 2 CPU processes (gloo): the teacher check runs on both ranks (the
    evaluator gathers them), only rank 0 takes gradient shares and writes them, and the weights
    are those of the same distributed run without the hook."""
    import subprocess
    results = {}
    for name, hooks in (('ddp_health', [HEALTH]), ('ddp_plain', [])):
        opts = demo.run_options('cls', 'tat', 0, str(tmp), True, random_teacher('cls', tmp))
        opts.update({'custom_hooks': hooks, 'train_cfg.max_iters': ITERS,
                     'train_cfg.val_interval': ITERS, 'default_hooks.checkpoint.interval': ITERS,
                     'train_dataloader.batch_size': 2})
        cfg = demo.build_cfg('cls', 'tat', opts, str(tmp / name))
        cfg.dump(str(tmp / f'{name}.py'))
        env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', PORT=str(free_port()))
        proc = subprocess.run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'),
                               str(tmp / f'{name}.py'), '2', '--work-dir', str(tmp / name)],
                              capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        results[name] = torch.load(str(tmp / name / f'iter_{ITERS}.pth'), map_location='cpu',
                                   weights_only=False)['state_dict']
    assert all(torch.equal(results['ddp_health'][k], v) for k, v in results['ddp_plain'].items())
    logs = glob.glob(str(tmp / 'ddp_health' / '*' / '*.log'))
    scalar_files = glob.glob(str(tmp / 'ddp_health' / '*' / 'vis_data' / 'scalars.json'))
    assert len(logs) == 1 and len(scalar_files) == 1  # rank 0 only
    with open(logs[0]) as f:
        log = f.read()
    assert log.count('Distillation health at iteration') == ITERS
    assert 'Teacher check on 8 val samples' in log  # both ranks' halves, gathered
    with open(scalar_files[0]) as f:
        rows = [json.loads(line) for line in f]
    assert sum('health/grad_ratio.tat.backbone.layer4' in row for row in rows) == ITERS


def test_attention_collapse_warns(tmp):
    """A TaT attention that is one-hot (temperature 1e-4) is reported once, with the fix."""
    hook = dict(type='DistillHealthHook', interval=1, teacher_check=False, patience=2)
    options = {'model.distill': [dict(
        student='backbone.layer4', teacher='backbone.layer4',
        losses=[dict(type='TaTLoss', student_channels=64, teacher_channels=256,
                     temperature=1e-4, loss_weight=0.2)])]}
    _, _, log, scalars = train('cls', 'tat', tmp, 'cls_collapse', [hook], 3, options=options)
    assert [row['health/attn_max.tat.backbone.layer4'] for row in scalars
            if 'health/attn_max.tat.backbone.layer4' in row] == pytest.approx([1.0] * 3, abs=1e-3)
    assert log.count('one-to-one matching') == 1 and 'try `temperature`' in log
    assert 'at 2 checks in a row' in log


def test_dafa_reports_its_policy_entropy():
    loss = DAFADistillLoss(feature_loss=dict(type='TaTLoss'), search=dict(search_iters=0),
                           student_channels=8, teacher_channels=8)
    record_statistics(loss, True)
    loss.search.sample(0)
    loss(torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8))
    stats = loss.last_statistics['loss']
    assert set(stats) == {'attn_max', 'attn_entropy', 'dafa_policy_entropy'}
    assert float(stats['dafa_policy_entropy']) == pytest.approx(1.0)  # the uniform initial policy
    with torch.no_grad():
        loss.search.selection_logits.zero_()
        loss.search.selection_logits[0] = 50.0  # one sub-policy
    assert float(loss.policy_entropy()) == pytest.approx(0.0, abs=1e-6)
    n = loss.search.selection_logits.numel()
    with torch.no_grad():
        loss.search.selection_logits.zero_()
        loss.search.selection_logits[:2] = 50.0  # two equally likely: log 2 / log n
    assert float(loss.policy_entropy()) == pytest.approx(math.log(2) / math.log(n), rel=1e-5)


def test_shipped_distillation_configs_switch_the_hook_on():
    """Every distillation config (``*_to_*`` in configs/cls|seg|det, every demo method) has the
    hook in custom_hooks (a text check: parsing all of them takes over a minute), and the demo's
    custom_hooks build."""
    from mmengine.registry import HOOKS
    paths = glob.glob(osp.join(REPO, 'configs', '*', '*_to_*.py'))
    paths += [p for p in glob.glob(osp.join(REPO, 'configs', 'demo', '*', '*.py'))
              if not osp.basename(p).startswith(('teacher', 'student', 'tat_dafa'))]
    assert len(paths) >= 50
    for path in paths:
        with open(path) as f:
            text = f.read()
        assert text.count("dict(type='DistillHealthHook')") == 1, path
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'cls', 'tat_dafa.py'))  # inherits
    hooks = [HOOKS.build(dict(h)) for h in cfg.custom_hooks]
    assert [type(h).__name__ for h in hooks].count('DistillHealthHook') == 1


# --------------------------------------------------------------------------- warnings, unit
class FakeLogger:

    def __init__(self):
        self.warnings, self.infos = [], []

    def warning(self, message):
        self.warnings.append(message)

    def info(self, message):
        self.infos.append(message)


def fake_runner(name: str):
    return types.SimpleNamespace(logger=FakeLogger(), iter=0,
                                 message_hub=MessageHub.get_instance(name))


def test_warnings_come_once_after_patience_with_advice():
    hook = DistillHealthHook(patience=2)
    runner = fake_runner('health_warnings')
    bad = {'grad_ratio.kd.x': 0.001, 'grad_ratio.fitnet.x': 25.0, 'grad_cos.kd.x': -0.5,
           'attn_max.tat.x': 0.99, 'dam_area_mask.dam.x': 0.002}
    hook._check(runner, bad)
    assert runner.logger.warnings == []  # once is not "stays"
    hook._check(runner, bad)
    text = '\n'.join(runner.logger.warnings)
    assert len(runner.logger.warnings) == 5
    for phrase in ('kd.x on the student is 0.10% of the task loss',
                   'does nothing: raise its loss_weight',
                   'fitnet.x on the student is 25.0x', 'dominates the task loss',
                   'cosine -0.50', 'fights the task loss', 'one-to-one matching',
                   'try `temperature`', "DAM's mask for dam.x covers 0.2% of the map"):
        assert phrase.lower() in text.lower(), phrase
    hook._check(runner, bad)
    assert len(runner.logger.warnings) == 5  # each warning once
    # a condition that does not hold in a row is not reported
    hook = DistillHealthHook(patience=2)
    for value in (0.001, 0.5, 0.001):
        hook._check(runner, {'grad_ratio.at.y': value})
    assert len(runner.logger.warnings) == 5
    hook._check(runner, {'dam_area_mask.dam.y': 0.999, 'grad_ratio.ok.y': 0.5,
                         'grad_cos.ok.y': 0.1, 'attn_max.ok.y': 0.5})
    hook._check(runner, {'dam_area_mask.dam.y': 0.999, 'grad_ratio.ok.y': 0.5,
                         'grad_cos.ok.y': 0.1, 'attn_max.ok.y': 0.5})
    assert len(runner.logger.warnings) == 6 and 'DAM confines nothing' in runner.logger.warnings[-1]


def test_plateau_warning_task_flat_while_a_term_falls():
    hook = DistillHealthHook(interval=2, patience=2)
    runner = fake_runner('health_plateau')
    hub = runner.message_hub
    task = [1.40, 1.41, 1.40, 1.39, 1.40, 1.40]
    tat = [1.0, 0.9, 0.7, 0.6, 0.5, 0.4]
    kd = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    for i, values in enumerate(zip(task, tat, kd)):
        for key, value in zip(('decode.loss_ce', 'loss_tat.x', 'loss_kd.x'), values):
            hub.update_scalar(f'train/{key}', value)
        if i % 2 == 1:
            hook._check_plateau(runner, ['loss_tat.x', 'loss_kd.x'], ['decode.loss_ce'])
    assert len(runner.logger.warnings) == 1
    message = runner.logger.warnings[0]
    assert 'task loss stayed flat' in message and 'loss_tat.x fell (0.95 -> 0.45)' in message
    # a falling task loss is no plateau
    hook = DistillHealthHook(interval=1, patience=1)
    runner = fake_runner('health_no_plateau')
    for ce, term in ((2.0, 1.0), (1.5, 0.5)):
        runner.message_hub.update_scalar('train/loss_cls', ce)
        runner.message_hub.update_scalar('train/loss_tat.x', term)
        hook._check_plateau(runner, ['loss_tat.x'], ['loss_cls'])
    assert runner.logger.warnings == []


def test_student_above_its_teacher_warns_after_first_validation():
    hook = DistillHealthHook()
    runner = fake_runner('health_above')
    hook.teacher_metric = ('accuracy/top1', 80.0)
    hook.after_val_epoch(runner, {'accuracy/top1': 85.0})
    hook.after_val_epoch(runner, {'accuracy/top1': 90.0})  # only the first validation
    assert len(runner.logger.warnings) == 1
    assert 'above its teacher (80)' in runner.logger.warnings[0]
    hook = DistillHealthHook()
    hook.teacher_metric = ('mIoU', 60.0)
    hook.after_val_epoch(runner, {'mIoU': 50.0})
    assert len(runner.logger.warnings) == 1


def test_bad_arguments_are_build_errors():
    for kwargs, match in ((dict(interval=-1), 'interval'),
                          (dict(teacher_check='yes'), 'teacher_check'),
                          (dict(teacher_val_batches=0), 'teacher_val_batches'),
                          (dict(dam_area_range=(0.5, 0.1)), 'dam_area_range'),
                          (dict(patience=0), 'patience')):
        with pytest.raises(ValueError, match=match):
            DistillHealthHook(**kwargs)
