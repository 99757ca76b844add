"""Distillers for the three task libraries: real upstream models, real train steps on CPU."""
import importlib

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

import tat_mm  # noqa: F401
from distill_cases import NUM_CLASSES, SIZES, cls_distiller, det_distiller, seg_distiller
from tat_mm.testing import fake_batch

SCOPES = {'cls': 'mmpretrain', 'seg': 'mmseg', 'det': 'mmdet'}


def build(task, cfg):
    init_default_scope(SCOPES[task])  # built from the task's own scope, as a runner does
    return importlib.import_module(f'{SCOPES[task]}.registry').MODELS.build(cfg)


def expected_keys(task, kind=None):
    if task == 'seg':
        tap = 'decode_head.sep_bottleneck'
        return {f'loss_tat.{tap}', f'loss_tat_pg.{tap}', f'loss_tat_ap.{tap}', f'loss_dam.{tap}',
                f'loss_dam_feat.{tap}', 'loss_kd.decode_head.conv_seg'}
    if task == 'cls':
        tap = 'backbone.layer4'
        return {f'loss_tat.{tap}', f'loss_dam.{tap}', f'loss_dam_feat.{tap}', 'loss_kd.head.fc'}
    keys = set()
    for level in (0, 1):
        keys |= {f'loss_tat_pg.neck.{level}', f'loss_tat_ap.neck.{level}'}
    for level in (2, 3, 4):
        keys |= {f'loss_tat.neck.{level}', f'loss_dam.neck.{level}', f'loss_dam_feat.neck.{level}'}
    return keys


CASES = {
    'seg_deeplabv3plus': ('seg', lambda p: seg_distiller(p)),
    'cls_resnet': ('cls', lambda p: cls_distiller(p)),
    'det_faster_rcnn': ('det', lambda p: det_distiller(p, 'faster_rcnn')),
    'det_retinanet': ('det', lambda p: det_distiller(p, 'retinanet')),
}


@pytest.mark.parametrize('case', list(CASES))
def test_train_step(case, tmp_path):
    task, make_cfg = CASES[case]
    model = build(task, make_cfg(tmp_path))
    model.train()
    assert not model.teacher.training, 'model.train() must not flip the teacher to train mode'
    assert all(not m.training for m in model.teacher.modules())
    teacher_state = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student_before = {k: v.detach().clone() for k, v in model.student.named_parameters()}
    pairs_before = {k: v.detach().clone() for k, v in model.pairs.named_parameters()}
    # The teacher is neither in the optimizer nor in the checkpoint.
    assert not any(k.startswith('teacher') for k in model.state_dict())
    assert all(p.requires_grad is False for p in model.teacher.parameters())
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}

    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    for step in range(2):
        batch = fake_batch(task, 2, SIZES[task], NUM_CLASSES, seed=step)
        log_vars = model.train_step(batch, optim_wrapper)
    missing = expected_keys(task) - set(log_vars)
    assert not missing, f'loss terms missing from the log: {missing}'
    for key, value in log_vars.items():
        assert torch.isfinite(torch.as_tensor(value)), key
    distill_terms = [log_vars[k] for k in expected_keys(task)]
    assert any(float(v) != 0 for v in distill_terms), 'every distillation term is zero'

    changed = [k for k, v in model.student.named_parameters() if not torch.equal(v, student_before[k])]
    assert any(k.startswith('backbone.') for k in changed)
    # Teacher weights AND BN running statistics did not move.
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), f'teacher {k} changed'
    # The distillation modules (embeddings, DAM) are in the optimizer and trained. (Single
    # parameters may legitimately not move: TaT's unscaled softmax can saturate on random nets.)
    optimized = {id(p) for group in optim_wrapper.optimizer.param_groups for p in group['params']}
    assert pairs_before and all(id(p) in optimized for p in model.pairs.parameters())
    for pair in model.pairs:
        for name, loss in zip(pair.loss_names, pair.losses):
            params = list(loss.named_parameters())
            if params:
                prefix = f'{list(model.pairs).index(pair)}.losses.{pair.loss_names.index(name)}.'
                assert any(not torch.equal(v, pairs_before[prefix + k]) for k, v in params), name


def test_predict_and_tensor_modes_are_the_students(tmp_path):
    model = build('seg', seg_distiller(tmp_path)).eval()
    data = model.data_preprocessor(fake_batch('seg', 2, SIZES['seg'], NUM_CLASSES), False)
    with torch.no_grad():
        ours = model(**data, mode='predict')
        theirs = model.student(**data, mode='predict')
        logits = model(data['inputs'], data['data_samples'], mode='tensor')
    assert len(ours) == 2 and hasattr(ours[0], 'pred_sem_seg')
    for a, b in zip(ours, theirs):
        assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)
    assert logits.shape[:2] == (2, NUM_CLASSES)


def test_teacher_is_stopped_after_last_tap(tmp_path):
    """The teacher forward ends as soon as every teacher tap has fired: its head never runs."""
    cfg = cls_distiller(tmp_path)
    cfg['distill'] = cfg['distill'][:1]  # only backbone.layer4
    model = build('cls', cfg)
    calls = []
    model.teacher.neck.register_forward_hook(lambda *a: calls.append('neck'))
    model.student.neck.register_forward_hook(lambda *a: calls.append('student neck'))
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    model.train_step(fake_batch('cls', 2, SIZES['cls'], NUM_CLASSES), optim_wrapper)
    assert calls == ['student neck']


def test_half_precision_teacher(tmp_path):
    cfg = cls_distiller(tmp_path)
    cfg['teacher_dtype'] = 'bfloat16'
    model = build('cls', cfg)
    assert next(model.teacher.parameters()).dtype == torch.bfloat16
    model.float()  # a .float() on the distiller keeps the teacher in half precision
    assert next(model.teacher.parameters()).dtype == torch.bfloat16
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    log_vars = model.train_step(fake_batch('cls', 2, SIZES['cls'], NUM_CLASSES), optim_wrapper)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())


def test_dam_ground_truth_supervision_in_detection(tmp_path):
    cfg = det_distiller(tmp_path, 'retinanet')
    cfg['dam_gt_supervision'] = True
    model = build('det', cfg)
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    log_vars = model.train_step(fake_batch('det', 2, SIZES['det'], NUM_CLASSES), optim_wrapper)
    for level in (2, 3, 4):
        assert torch.isfinite(log_vars[f'loss_dam_gt.neck.{level}'])
        assert log_vars[f'loss_dam_gt.neck.{level}'] > 0
    # only the DAM-wrapped losses take boxes; the plain TaT losses are unchanged
    assert 'loss_tat_pg.neck.0' in log_vars


def test_save_teacher_option(tmp_path):
    cfg = cls_distiller(tmp_path)
    model = build('cls', cfg)
    assert not any(k.startswith('teacher.') for k in model.state_dict())
    cfg['save_teacher'] = True
    model = build('cls', cfg)
    state = model.state_dict()
    teacher_keys = [k for k in state if k.startswith('teacher.')]
    assert len(teacher_keys) == len(model.teacher.state_dict())
    # loading such a state restores the teacher too (and stays strict for everything else)
    state = {k: v.clone() for k, v in state.items()}
    state['teacher.head.fc.bias'].fill_(3.0)
    fresh = build('cls', dict(cfg, save_teacher=False))
    fresh.load_state_dict(state, strict=True)
    assert torch.all(fresh.teacher.head.fc.bias == 3.0)
