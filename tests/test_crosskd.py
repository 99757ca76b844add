"""CrossKD (cross-head distillation in DetDistiller) and its two losses.

The losses are checked against the reference arithmetic written out with explicit loops; the
cross-head path against the teacher's own head and a hand-written cross pass; the distiller by
real train steps of upstream RetinaNet / GFL / ATSS configs and of the demo config.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

import tat_mm  # noqa: F401
from mmdet.registry import MODELS as DET_MODELS
from distill_cases import CROSSKD_HEADS, NUM_CLASSES, SIZES, crosskd_distiller
from tat_mm.checkpoint_loading import load_checkpoint_file
from tat_mm.models.cross_head_distillation import align_scale
from tat_mm.testing import fake_batch, offline_model_config, save_random_checkpoint

SIZE = SIZES['det']
HEADS = CROSSKD_HEADS


# ----------------------------------------------------------------------------- the losses
def test_kd_quality_focal_loss_equals_the_reference_loops():
    torch.manual_seed(0)
    pred = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(6, 4, dtype=torch.float64) * 3
    weight = torch.tensor([1., 0., 1., 1., 0.5, 1.], dtype=torch.float64)
    loss = ROOT_MODELS.build(dict(type='KDQualityFocalLoss', beta=1.5, loss_weight=2.0))
    value = loss(pred, target, weight=weight, avg_factor=3.0)
    expected = 0.
    for i in range(6):
        for c in range(4):
            p, t = pred[i, c], 1 / (1 + math.exp(-float(target[i, c])))
            q = torch.sigmoid(p)
            bce = -(t * torch.log(q) + (1 - t) * torch.log(1 - q))
            expected = expected + weight[i] * bce * (q - t).abs() ** 1.5
    expected = 2.0 * expected / (3.0 + torch.finfo(torch.float32).eps)
    assert torch.allclose(value, expected)
    grad, = torch.autograd.grad(value, pred)
    expected_grad, = torch.autograd.grad(expected, pred)
    assert torch.allclose(grad, expected_grad)


def test_distribution_kl_div_loss_equals_the_reference_loops():
    torch.manual_seed(0)
    pred = torch.randn(5, 17, dtype=torch.float64, requires_grad=True)
    target = torch.randn(5, 17, dtype=torch.float64)
    weight = torch.rand(5, dtype=torch.float64)
    loss = ROOT_MODELS.build(dict(type='DistributionKLDivLoss', temperature=2.0, loss_weight=3.0))
    value = loss(pred, target, weight=weight, avg_factor=4.0)
    expected = 0.
    for i in range(5):
        p_t = torch.softmax(target[i] / 2.0, 0)
        log_p_s = torch.log_softmax(pred[i] / 2.0, 0)
        row = sum(p_t[k] * (torch.log(p_t[k]) - log_p_s[k]) for k in range(17)) * 4.0
        expected = expected + weight[i] * row
    expected = 3.0 * expected / (4.0 + torch.finfo(torch.float32).eps)
    assert torch.allclose(value, expected)
    grad, = torch.autograd.grad(value, pred)
    expected_grad, = torch.autograd.grad(expected, pred)
    assert torch.allclose(grad, expected_grad)


def test_align_scale_equals_per_channel_loops():
    torch.manual_seed(0)
    student = torch.randn(2, 3, 4, 5, dtype=torch.float64) * 4 + 1
    teacher = torch.randn(2, 3, 4, 5, dtype=torch.float64) * 0.5 - 2
    out = align_scale(student, teacher)
    for c in range(3):
        s = student[:, c].reshape(-1)
        t = teacher[:, c].reshape(-1)
        s_std = math.sqrt(sum((v - s.mean()) ** 2 for v in s) / (len(s) - 1))
        t_std = math.sqrt(sum((v - t.mean()) ** 2 for v in t) / (len(t) - 1))
        expected = (student[:, c] - s.mean()) / (s_std + 1e-6) * t_std + t.mean()
        assert torch.allclose(out[:, c], expected)


# ----------------------------------------------------------------------------- the distiller
_distiller_cfg = crosskd_distiller


def _build(cfg):
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DET_MODELS.build(cfg)


def _batch(model, seed=0):
    torch.manual_seed(seed)
    data = model.data_preprocessor(fake_batch('det', 2, SIZE, NUM_CLASSES), True)
    return data['inputs'], data['data_samples']


@pytest.mark.parametrize('head', sorted(HEADS))
def test_teacher_predictions_by_hand_equal_the_teacher_head(head, tmp_path):
    """The teacher's predictions the cross head makes are its head's own forward; with the
    student's features replaced by the teacher's, the cross predictions are the teacher's too
    (align_scale of a feature to itself is the identity)."""
    model = _build(_distiller_cfg(tmp_path, head, cut=1))
    inputs, _ = _batch(model)
    teacher = model.teacher
    model.teacher_taps.stop_when_complete = False  # the taps would stop the teacher at its neck
    with torch.no_grad():
        levels = teacher.extract_feat(inputs)
        upstream = teacher.bbox_head(levels)
        held = {'cls': [], 'reg': []}
        for x in levels:  # the input of conv 1 of each branch: conv 0's output
            held['cls'].append(teacher.bbox_head.cls_convs[0](x))
            held['reg'].append(teacher.bbox_head.reg_convs[0](x))
        teacher_preds, cross_preds = model.cross_head.cross_predictions(teacher, levels, held)
    for level in range(len(levels)):
        assert torch.allclose(teacher_preds[level]['cls'], upstream[0][level], atol=1e-5)
        assert torch.allclose(teacher_preds[level]['bbox'], upstream[1][level], atol=1e-5)
        if head in ('atss', 'fcos'):
            assert torch.allclose(teacher_preds[level]['centerness'], upstream[2][level], atol=1e-5)
        for key in teacher_preds[level]:
            assert torch.allclose(cross_preds[level][key], teacher_preds[level][key], atol=1e-3)


def test_cross_pass_is_relu_of_aligned_student_features_through_the_teacher_rest(tmp_path):
    model = _build(_distiller_cfg(tmp_path, 'retinanet', cut=1))
    inputs, _ = _batch(model)
    teacher, head = model.teacher, model.teacher.bbox_head
    model.teacher_taps.stop_when_complete = False
    torch.manual_seed(3)
    with torch.no_grad():
        levels = teacher.extract_feat(inputs)
        student_held = {b: [torch.randn(2, 64, *x.shape[-2:]) * 3 for x in levels]
                        for b in ('cls', 'reg')}
        _, cross = model.cross_head.cross_predictions(teacher, levels, student_held)
        for level, x in enumerate(levels):
            t_cls = head.cls_convs[0](x)
            expected = head.retina_cls(head.cls_convs[1](F.relu(align_scale(
                student_held['cls'][level], t_cls))))
            assert torch.allclose(cross[level]['cls'], expected, atol=1e-5)


@pytest.mark.parametrize('head', sorted(HEADS))
def test_crosskd_trains_a_step_teacher_frozen_gradient_stops_at_the_cut(head, tmp_path):
    model = _build(_distiller_cfg(tmp_path, head, cut=1))
    model.train()
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    inputs, data_samples = _batch(model)
    losses = model.loss(inputs, data_samples)
    cross_keys = sorted(k for k in losses if k.startswith('loss_crosskd_'))
    expected = {'retinanet': ['cls', 'reg'], 'gfl': ['bbox', 'cls', 'reg'],
                'atss': ['center', 'cls', 'reg'], 'fcos': ['cls', 'reg']}[head]
    assert cross_keys == [f'loss_crosskd_{t}.bbox_head' for t in expected], sorted(losses)
    for key in cross_keys:
        assert torch.isfinite(losses[key]) and losses[key] > 0, (key, losses[key])
    # The cross terms alone: they reach the student's backbone, neck and head convs before the
    # cut, never its convs after the cut or its output layers, never the teacher.
    sum(losses[k] for k in cross_keys).backward()
    s_head = model.student.bbox_head
    for name, module in [('cls_convs.0', s_head.cls_convs[0]), ('reg_convs.0', s_head.reg_convs[0]),
                         ('neck', model.student.neck)]:
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    after_cut = [s_head.cls_convs[1], s_head.reg_convs[1]] + [
        m for n, m in s_head.named_children() if n.endswith(('_cls', '_reg', '_centerness'))]
    for module in after_cut:
        assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in module.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())
    # A real optimiser step: the teacher is unchanged, the terms in the log.
    model.zero_grad()
    log_vars = model.train_step(fake_batch('det', 2, SIZE, NUM_CLASSES),
                                OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
    assert all(k in log_vars for k in cross_keys)
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert not any(k.startswith('teacher.') for k in model.state_dict())


def test_crosskd_with_feature_entries_and_cut_zero(tmp_path):
    """With the cut at 0 the student's FPN levels enter the whole teacher head; a feature entry
    on the neck next to it still trains, and the teacher still stops after its neck."""
    cfg = _distiller_cfg(tmp_path, 'retinanet', cut=0)
    cfg['distill'] = [dict(student='neck', teacher='neck', index=0,
                           losses=[dict(type='FitNetLoss', student_channels=64,
                                        teacher_channels=64)])]
    model = _build(cfg)
    model.train()
    losses = model.loss(*_batch(model))
    assert 'loss_fitnet.neck.0' in losses and 'loss_crosskd_cls.bbox_head' in losses
    assert all(torch.isfinite(torch.as_tensor(v)).all() for k, v in losses.items()
               if not isinstance(v, list))


@pytest.mark.parametrize('head', ['retinanet', 'atss'])
def test_a_term_set_to_none_is_switched_off(head, tmp_path):
    model = _build(_distiller_cfg(tmp_path, head, cross_head=dict(loss_cls_kd=None)))
    model.train()
    losses = model.loss(*_batch(model))
    assert 'loss_crosskd_cls.bbox_head' not in losses
    assert torch.isfinite(losses['loss_crosskd_reg.bbox_head'])


def test_crosskd_bad_configs_say_what_to_change(tmp_path):
    with pytest.raises(ValueError, match=r'same feat_channels: student 32, teacher 64.*'
                                         r'bbox_head.feat_channels to 64'):
        _build(_distiller_cfg(tmp_path, 'retinanet', student_overrides=dict(
            bbox_head=dict(feat_channels=32))))
    with pytest.raises(ValueError, match='reused_teacher_head_idx=3.*use 0 to 2'):
        _build(_distiller_cfg(tmp_path, 'retinanet', cut=3))
    with pytest.raises(ValueError, match=r"unknown term\(s\) \['loss_bbox_kd'\]"):
        _build(_distiller_cfg(tmp_path, 'retinanet', cross_head=dict(
            loss_bbox_kd=dict(type='GIoULoss'))))
    with pytest.raises(ValueError, match='a weight must be a finite number'):
        _build(_distiller_cfg(tmp_path, 'retinanet', cross_head=dict(
            loss_cls_kd=dict(type='KDQualityFocalLoss', loss_weight=-1.0))))
    # FSAF's head is a RetinaHead subclass with other outputs: refused, not silently used.
    with pytest.raises(ValueError, match="supports dense heads GFLHead, ATSSHead, RetinaHead, "
                                         "FCOSHead; the student's bbox_head is FSAFHead"):
        cfg = _distiller_cfg(tmp_path, 'retinanet')
        cfg['student'] = offline_model_config('mmdet::fsaf/fsaf_r50_fpn_1x_coco.py', NUM_CLASSES,
                                              SIZE)
        _build(cfg)


def test_demo_crosskd_config_trains_with_the_runner(tmp_path, monkeypatch):
    """configs/demo/det/crosskd.py, 2 iterations through MMEngine's runner on the built-in digits
    (random-weight teacher): the cross-head terms are logged, the teacher is not in the
    checkpoint, and the checkpoint's student loads into the plain demo student."""
    import os.path as osp

    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    monkeypatch.chdir(tmp_path)  # the demo config writes the digits data under ./data
    cfg = Config.fromfile(osp.join(root, 'configs', 'demo', 'det', 'crosskd.py'))
    teacher_config = osp.join(root, 'configs', 'demo', 'det', 'teacher.py')
    ckpt = save_random_checkpoint('mmdet', offline_model_config(teacher_config),
                                  tmp_path / 'teacher.pth', seed=1)
    cfg.model.teacher = dict(config=teacher_config, checkpoint=ckpt)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.custom_hooks = []
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=10**6)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.param_scheduler = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=2)
    cfg.log_level = 'WARNING'

    class Record(Hook):
        outputs = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.outputs.append({k: float(v) for k, v in outputs.items()})

    runner = Runner.from_cfg(cfg)
    runner.register_hook(Record())
    runner.train()
    for out in Record.outputs:
        assert {'loss_crosskd_cls.bbox_head', 'loss_crosskd_reg.bbox_head'} <= set(out), out
        assert all(math.isfinite(v) for v in out.values()), out
    state = load_checkpoint_file(str(tmp_path / 'work' / 'iter_2.pth'),
                                 map_location='cpu')['state_dict']
    assert not any(k.startswith('teacher.') for k in state)
    student_cfg = Config.fromfile(osp.join(root, 'configs', 'demo', 'det', 'student_head128.py'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        student = DET_MODELS.build(student_cfg.model)
    plain = {k[len('student.'):]: v for k, v in state.items() if k.startswith('student.')}
    assert len(plain) == len(state)  # nothing but the student in the checkpoint
    student.load_state_dict(plain, strict=True)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_crosskd_loss_step_under_autocast(dtype, tmp_path):
    """The cross-head step under CPU autocast (AMP's forward): finite terms near float32's (the
    alignment statistics and the losses run in float32; the teacher's head in the autocast dtype)."""
    model = _build(_distiller_cfg(tmp_path, 'gfl', cut=1))
    model.train()
    inputs, data_samples = _batch(model)
    ref = {k: float(v) for k, v in model.loss(inputs, data_samples).items()
           if k.startswith('loss_crosskd_')}
    with torch.autocast('cpu', dtype=dtype):
        amp = model.loss(inputs, data_samples)
    for key, value in ref.items():
        assert amp[key].dtype == torch.float32 and torch.isfinite(amp[key]), key
        assert abs(float(amp[key]) - value) <= 0.1 * abs(value) + 1e-3, (key, float(amp[key]), value)


def test_reference_held_feature_is_the_activated_one():
    """Why the cross head reads the activated conv output: the reference holds
    ``conv(x, activate=False)`` and then calls ``conv.activate`` on it, which mmcv's ConvModule
    does in place (its ReLU's default), so the held tensor is the activated one."""
    from mmcv.cnn import ConvModule
    conv = ConvModule(4, 4, 3, padding=1, norm_cfg=dict(type='GN', num_groups=2))
    held = conv(torch.randn(1, 4, 5, 5), activate=False)
    pre_activation = held.clone()
    conv.activate(held)
    assert pre_activation.min() < 0 and held.min() >= 0
    assert torch.equal(held, F.relu(pre_activation))
