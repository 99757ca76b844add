"""Mixed precision on CPU: every loss, DAM, DAFA and each distiller's step under autocast.

What AMP gives a loss: the student's features in float16 / bfloat16 (the output of an autocast
layer) and the teacher's rounded to that dtype (an autocast or ``teacher_dtype`` teacher), cast
back to float32 by the distill pair. Features are post-ReLU-like with values up to 100, and 2048
teacher channels where a loss takes channels (spatially small, so the tests stay fast). Float16
gradients are taken as a dynamic GradScaler takes them: the loss is multiplied by the scale (2**16
first, halved while the gradient overflows) before ``backward`` and the gradient divided after;
without it, float16 gradients below 6e-8 flush to zero.

References and tolerances (relative; measured errors in docs/amp_and_cuda.md, 3-10x below):

* the value against float32 on the unrounded features: 2e-3 (float16), 2e-2 (bfloat16);
* the gradients (inputs and the loss's own parameters) against float32 on the same rounded
  features: 5e-3 / 5e-2, i.e. a few units of the gradient's own rounding to float16 / bfloat16.
  Against the unrounded features the gradient of an unscaled TaT softmax moves more than that
  (6 % / 60 % at these magnitudes: its nearly one-hot attention flips between close keys when the
  inputs are rounded); that is the features' precision, the same in any loss implementation.
  Parameters of layers that run under autocast themselves (DAM's heads) get 2e-2 / 2e-1.

The real ``AmpOptimWrapper`` refuses CPU; with its CUDA check lifted and torch's CPU GradScaler it
runs here in bfloat16 (MMEngine's CPU autocast takes only bfloat16), through a real Runner: save
and resume of the loss scale. On a GPU, tests/test_cuda.py runs it unmodified.
"""
import functools
import os
import os.path as osp
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import init_default_scope

import tat_mm  # noqa: F401
from distill_cases import (NUM_CLASSES, SIZES, cls_distiller, cls_runner_config,
                           crosskd_distiller, det_distiller, seg_distiller)
from tat_mm.modules.feature_augment_ops import OPERATIONS, apply_operation
from tat_mm.testing import fake_batch

ROOT = Path(__file__).resolve().parents[1]
SCOPES = {'cls': 'mmpretrain', 'seg': 'mmseg', 'det': 'mmdet'}
DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}
# GradScaler's initial scale; bfloat16 has float32's range and AMP uses no scaling with it.
GRAD_SCALE = {torch.float16: 2.0**16, torch.bfloat16: 1.0}
# Relative tolerances of a loss value and of its gradient (norm of the difference / norm).
LOSS_TOL = {torch.float16: dict(value=2e-3, grad=5e-3), torch.bfloat16: dict(value=2e-2, grad=5e-2)}
# Gradients of parameters whose layers run under autocast (DAM's heads: float16 / bfloat16 convs).
HEAD_GRAD_TOL = {torch.float16: 2e-2, torch.bfloat16: 2e-1}
CS, CT = 512, 2048  # a ResNet-18 student and a ResNet-50 teacher at layer4


def features(shape, seed, peak=100.0):
    """Post-ReLU-like features: half zeros, the rest |N(0, 1)| scaled so the largest is ``peak``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).clamp(min=0)
    return x * (peak / x.max())


def logits(shape, seed, peak=100.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    return x * (peak / x.abs().max())


def total(out):
    return sum(out.values()) if isinstance(out, dict) else out


def rounded(x, dtype):
    """``x`` (a tensor or a list of them) rounded to ``dtype`` and back to float32."""
    return [rounded(y, dtype) for y in x] if isinstance(x, list) else x.to(dtype).float()


def loss_and_grads(loss, student, teacher, dtype=None, extra=None):
    """(value, student input gradients, parameter gradients, graph output) in float32, or as
    AMP computes them (``dtype``) with a dynamic loss scale."""
    if dtype is None:
        torch.manual_seed(0)  # losses with random parts (MGD's mask) draw the same numbers
        loss.zero_grad()
        s = [x.clone().requires_grad_() for x in student]
        value = total(call(loss, s, teacher, extra))
        value.backward()
        return value.detach(), [x.grad for x in s], param_grads(loss, 1.0), value
    t = rounded(teacher, dtype)  # the teacher's precision, cast back by the distill pair
    scale = GRAD_SCALE[dtype]
    while True:
        torch.manual_seed(0)
        loss.zero_grad()
        s = [x.to(dtype).requires_grad_() for x in student]  # an autocast layer's output
        with torch.autocast('cpu', dtype=dtype):
            value = total(call(loss, s, t, extra))
        (value * scale).backward()
        grads = [x.grad.float() / scale for x in s]
        if all(torch.isfinite(g).all() for g in grads) or scale < 1:
            return value.detach(), grads, param_grads(loss, scale), value
        scale /= 2  # what GradScaler does after an overflowing step


def param_grads(module, scale):
    return {k: p.grad / scale for k, p in module.named_parameters() if p.grad is not None}


def call(loss, s, t, extra):
    if getattr(loss, 'multi_tap', False):
        return loss(s, t[0], **(extra or {}))
    return loss(s[0], t[0], **(extra or {}))


def record_mask(loss, run):
    """The area mask a DAMDistillLoss computes while ``run()`` runs."""
    masks, compute = [], loss.compute_mask
    loss.compute_mask = lambda *args: masks.append(compute(*args)) or masks[-1]
    try:
        run()
    finally:
        del loss.compute_mask
    return masks[0]


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def loss_case(name):
    """(loss module, student inputs, teacher inputs, extra kwargs) of one shipped loss."""
    torch.manual_seed(0)
    s, t = features((2, CS, 8, 8), 1), features((2, CT, 8, 8), 2)
    conv1x1 = dict(query_embed='conv1x1', value_embed='conv1x1')
    cases = {
        'TaTLoss': (dict(type='TaTLoss', student_channels=CS, teacher_channels=CT, **conv1x1),
                    [s], [t]),
        'PatchGroupTaTLoss': (dict(type='PatchGroupTaTLoss', student_channels=CS,
                                   teacher_channels=CT, patch_size=4, group_size=2), [s], [t]),
        'AnchorPointTaTLoss': (dict(type='AnchorPointTaTLoss', student_channels=CS,
                                    teacher_channels=CT, pool_size=2), [s], [t]),
        'HierarchicalTaTLoss': (dict(type='HierarchicalTaTLoss', student_channels=CS,
                                     teacher_channels=CT, pool_size=2, patch_size=4, group_size=2),
                                [s], [t]),
        'DAMDistillLoss': (dict(type='DAMDistillLoss', student_channels=CS, teacher_channels=CT,
                                topk=4, feature_loss=dict(type='TaTLoss', **conv1x1),
                                dam=dict(num_classes=NUM_CLASSES)), [s], [t]),
        'DAFADistillLoss': (dict(type='DAFADistillLoss', student_channels=CS, teacher_channels=CT,
                                 feature_loss=dict(type='FitNetLoss'),
                                 search=dict(search_iters=0, seed=0)), [s], [t]),
        'KDLoss': (dict(type='KDLoss', temperature=4.0), [logits((4, 1000), 3)],
                   [logits((4, 1000), 4)]),
        'FitNetLoss': (dict(type='FitNetLoss', student_channels=CS, teacher_channels=CT), [s], [t]),
        'ChannelWiseDivergenceLoss': (dict(type='ChannelWiseDivergenceLoss', tau=4.0),
                                      [features((2, CT, 8, 8), 5)], [t]),
        'DKDLoss': (dict(type='DKDLoss'), [logits((4, 1000), 3)], [logits((4, 1000), 4)]),
        'ATLoss': (dict(type='ATLoss'), [s], [t]),
        'ReviewKDLoss': (dict(type='ReviewKDLoss', student_channels=[256, CS],
                              teacher_channels=[1024, CT], mid_channels=256),
                         [features((2, 256, 8, 8), 6), features((2, CS, 4, 4), 7)],
                         [[features((2, 1024, 8, 8), 8), features((2, CT, 4, 4), 9)]]),
        'PKDLoss': (dict(type='PKDLoss', student_channels=CT, teacher_channels=CT),
                    [features((2, CT, 8, 8), 5)], [t]),
        'MGDLoss': (dict(type='MGDLoss', student_channels=CS, teacher_channels=CT),
                    [features((2, CS, 4, 4), 1)], [features((2, CT, 4, 4), 2)]),
        'DISTLoss': (dict(type='DISTLoss', tau=4.0), [logits((4, 1000), 3)],
                     [logits((4, 1000), 4)]),
        'KDQualityFocalLoss': (dict(type='KDQualityFocalLoss'), [logits((64, 80), 3)],
                               [logits((64, 80), 4)]),
        'DistributionKLDivLoss': (dict(type='DistributionKLDivLoss'), [logits((64, 17), 3)],
                                  [logits((64, 17), 4)]),
        'KDLoss_logit_standardization': (
            dict(type='KDLoss', temperature=2.0, logit_standardization=True),
            [logits((4, 1000), 3)], [logits((4, 1000), 4)]),
    }
    cfg, student, teacher = cases[name]
    extra = dict(gt_label=torch.tensor([1, 5, 7, 999])) if name == 'DKDLoss' else None
    return ROOT_MODELS.build(cfg), student, teacher, extra


LOSSES = ['TaTLoss', 'PatchGroupTaTLoss', 'AnchorPointTaTLoss', 'HierarchicalTaTLoss',
          'DAMDistillLoss', 'DAFADistillLoss', 'KDLoss', 'FitNetLoss', 'ChannelWiseDivergenceLoss',
          'DKDLoss', 'ATLoss', 'ReviewKDLoss', 'PKDLoss', 'MGDLoss', 'DISTLoss',
          'KDLoss_logit_standardization', 'KDQualityFocalLoss', 'DistributionKLDivLoss']


@pytest.mark.parametrize('dtype', list(DTYPES))
@pytest.mark.parametrize('name', LOSSES)
def test_loss_under_autocast_matches_float32(name, dtype):
    dtype = DTYPES[dtype]
    loss, student, teacher, extra = loss_case(name)
    loss.train()
    if name == 'DAFADistillLoss':
        loss.search.sample(0)  # the same augmentation in every pass
    if name == 'DAMDistillLoss':
        # DAM's areas are a discrete choice from its heads, which run in low precision: they agree
        # with float32's on most cells (float16: all 128 here, bfloat16: 123 of 128); the numerics
        # are then compared on the AMP pass's areas.
        fp32_mask = record_mask(loss, lambda: loss_and_grads(loss, student, teacher, extra=extra))
        amp_mask = record_mask(loss, lambda: loss_and_grads(loss, student, teacher, dtype, extra))
        assert (fp32_mask == amp_mask).float().mean() >= 0.9
        loss.compute_mask = lambda *args: amp_mask
    ref = loss_and_grads(loss, student, teacher, extra=extra)[0]
    _, ref_grads, ref_params, _ = loss_and_grads(loss, rounded(student, dtype),
                                                 rounded(teacher, dtype), extra=extra)
    value, grads, params, graph = loss_and_grads(loss, student, teacher, dtype, extra)
    assert graph.dtype == torch.float32, 'the loss must leave its float32 island in float32'
    assert torch.isfinite(value) and ref != 0
    tol = LOSS_TOL[dtype]
    assert abs(float(value - ref)) <= tol['value'] * abs(float(ref)), (float(value), float(ref))
    for g, g_ref in zip(grads, ref_grads):
        assert torch.isfinite(g).all()
        assert rel(g, g_ref) <= tol['grad'], rel(g, g_ref)
    # The loss's own parameters (embeddings, DAM heads, connectors) get finite, matching gradients.
    assert set(params) == set(ref_params)
    for key, g_ref in ref_params.items():
        assert torch.isfinite(params[key]).all(), key
        # DAM's heads and adapter compute under autocast, in the low precision itself
        limit = HEAD_GRAD_TOL[dtype] if key.startswith(('dam.', 'align.')) else tol['grad']
        if g_ref.norm() > 0:
            assert rel(params[key], g_ref) <= limit, (key, rel(params[key], g_ref))


@pytest.mark.parametrize('dtype', list(DTYPES))
def test_dam_outputs_float32_and_focal_loss_finite_when_saturated(dtype):
    """DAM's heads may run in low precision; its maps leave in float32, so a confident heatmap
    (sigmoid exactly 1 in float16) keeps the ground-truth focal loss finite."""
    loss = ROOT_MODELS.build(dict(type='DAMDistillLoss', student_channels=CS, teacher_channels=CT,
                                  topk=4, feature_loss=dict(type='FitNetLoss'),
                                  dam=dict(num_classes=NUM_CLASSES)))
    with torch.no_grad():  # every heatmap logit 9: sigmoid(9) = 0.99988 rounds to 1 in float16
        loss.dam.heatmap_head[-1].weight.zero_()
        loss.dam.heatmap_head[-1].bias.fill_(9.0)
    s, t = features((2, CS, 8, 8), 1), features((2, CT, 8, 8), 2)
    boxes = [torch.tensor([[1.0, 1.0, 5.0, 4.0]]), torch.tensor([[2.0, 0.0, 8.0, 8.0]])]
    labels = [torch.tensor([1]), torch.tensor([3])]
    with torch.autocast('cpu', dtype=DTYPES[dtype]):
        out = loss.dam(t)
        terms = loss(s.to(DTYPES[dtype]).requires_grad_(), t, gt_boxes=boxes, gt_labels=labels)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert bool((out['heatmap'] < 1).all()), 'float32 sigmoid of 9 is below 1'
    assert set(terms) == {'loss_feat', 'loss_dam', 'loss_dam_gt'}
    for key, value in terms.items():
        assert torch.isfinite(value), key
    terms['loss_dam_gt'].backward()
    assert all(torch.isfinite(p.grad).all() for p in loss.dam.parameters() if p.grad is not None)


@pytest.mark.parametrize('dtype', list(DTYPES))
@pytest.mark.parametrize('name', [n for n, op in OPERATIONS.items() if op.has_magnitude])
def test_dafa_operation_under_autocast(name, dtype):
    """DAFA's operations on a float32 teacher feature under autocast: finite, close to float32,
    and the gradient in the strength (what the magnitudes learn from) close to float32's."""
    dtype = DTYPES[dtype]
    x = features((2, CT, 8, 8), 2)
    weights = features((2, CT, 8, 8), 3)
    results = []
    for autocast in (False, True):
        strength = torch.tensor(OPERATIONS[name].default_range[1] / 2, requires_grad=True)
        gen = torch.Generator().manual_seed(0)
        with torch.autocast('cpu', dtype=dtype, enabled=autocast):
            out = apply_operation(name, x, strength, gen)
            objective = (out.float() * weights).mean()
        objective.backward()
        results.append((out.float(), strength.grad))
    (ref, ref_grad), (out, grad) = results
    assert torch.isfinite(out).all() and torch.isfinite(grad)
    assert rel(out, ref) <= LOSS_TOL[dtype]['value']
    assert abs(float(grad - ref_grad)) <= LOSS_TOL[dtype]['grad'] * abs(float(ref_grad)) + 1e-6


def test_token_folding_keeps_dtype_and_values():
    """Folding tokens into a map is a reshape: exact in any dtype (nothing to overflow)."""
    from tat_mm.distill.token_to_map import TokensToMap
    model = torch.nn.Module()
    model.num_extra_tokens = 1
    model.patch_resolution = (2, 3)
    fold = TokensToMap(model, '')
    tokens = logits((2, 7, 2048), 0).half()
    out = fold(tokens)
    assert out.dtype == torch.float16 and out.shape == (2, 2048, 2, 3)
    assert torch.equal(out, tokens[:, 1:].transpose(1, 2).reshape(2, 2048, 2, 3))


# ---------------------------------------------------------------------------------- distillers
def build(task, cfg):
    init_default_scope(SCOPES[task])
    import importlib
    return importlib.import_module(f'{SCOPES[task]}.registry').MODELS.build(cfg)


# Detection with RetinaNet: Faster R-CNN's RPN calls mmcv's nms, whose CPU kernel takes float32
# only (mmdet's own two-stage detectors fail under CPU autocast); test_cuda.py runs it on a GPU.
MAKERS = {'cls': cls_distiller, 'seg': seg_distiller,
          'det': lambda p: det_distiller(p, 'retinanet')}
# A whole student + teacher in low precision, against float32: relative tolerance of each term.
STEP_TOL = {torch.float16: 0.05, torch.bfloat16: 0.15}


# seg at 32x32 (its decode-head tap is 8x8): DeepLabV3+ under CPU autocast is slow at 64x64.
AMP_SIZES = dict(SIZES, seg=(32, 32))


@pytest.fixture(scope='module')
def distillers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('amp_distillers')
    cfgs = {task: make(tmp) for task, make in MAKERS.items()}
    cfgs['seg']['student']['data_preprocessor']['size'] = AMP_SIZES['seg']
    return {task: build(task, cfg) for task, cfg in cfgs.items()}


def step_terms(model, data, dtype=None):
    """Loss terms and the student's gradient of one loss step (float32, or under autocast with a
    dynamic loss scale, as GradScaler: halved while the gradient overflows)."""
    scale = GRAD_SCALE.get(dtype, 1.0)
    while True:
        model.zero_grad()
        torch.manual_seed(0)
        with torch.autocast('cpu', dtype=dtype or torch.float32, enabled=dtype is not None):
            losses = model(**data, mode='loss')
        parsed, _ = model.parse_losses(losses)
        (parsed * scale).backward()
        grad = torch.cat([p.grad.flatten() / scale for p in model.student.parameters()
                          if p.grad is not None])
        if bool(torch.isfinite(grad).all()) or scale < 1:
            # mmdet gives some terms as lists (one per FPN level): their sum, as parse_losses
            return {k: (sum(v) if isinstance(v, list) else v).detach()
                    for k, v in losses.items()}, grad
        scale /= 2


@pytest.mark.parametrize('task', ['cls', 'seg'])  # det: RetinaNet under CPU autocast takes
def test_distiller_loss_step_under_autocast(distillers, task):  # minutes; test_cuda.py has it
    """The whole loss step (student and teacher forwards, taps, DAM, every term) under autocast:
    finite, each distillation term close to float32, the student's gradient finite and the
    master weights still float32.

    The gradient's direction is not compared: the features differ from float32's by 5-9 % after
    a random ResNet in bfloat16, and the TaT terms' unscaled softmax, nearly one-hot, then picks
    other keys; float32 TaT on those same features gives the same (100x larger, orthogonal)
    gradient, so that is the features' precision, not the loss (docs/amp_and_cuda.md; measured
    cosine with float32: cls 0.95 / 0.06, seg 0.41 in float16).
    """
    model = distillers[task].train()
    data = model.data_preprocessor(fake_batch(task, 2, AMP_SIZES[task], NUM_CLASSES), True)
    ref, ref_grad = step_terms(model, data)
    for dtype in DTYPES.values():
        terms, grad = step_terms(model, data, dtype)
        assert set(terms) == set(ref)
        for key, value in terms.items():
            assert torch.isfinite(value.float()).all(), (key, dtype)
            if key.startswith('loss_') and '.' in key and float(ref[key]) != 0:  # distillation
                assert value.dtype == torch.float32
                assert abs(float(value - ref[key])) <= STEP_TOL[dtype] * abs(float(ref[key])), (
                    key, dtype, float(value), float(ref[key]))
        assert torch.isfinite(grad).all() and grad.norm() > 0
        assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize('teacher_dtype', ['float16', 'bfloat16'])
def test_half_teacher_with_autocast_student(distillers, tmp_path, teacher_dtype):
    """teacher_dtype with an autocast student (float16 and bfloat16 teachers under a bfloat16
    autocast, the 'mixed dtype' case): the teacher runs in its dtype, the terms are finite and
    close to those of a float32 teacher under the same autocast."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # float16 on CPU warns (tested below)
        half = build('cls', dict(cls_distiller(tmp_path), teacher_dtype=teacher_dtype)).train()
    full = distillers['cls'].train()  # the same teacher checkpoint (seeded), in float32
    half.load_state_dict(full.state_dict())
    data = full.data_preprocessor(fake_batch('cls', 2, SIZES['cls'], NUM_CLASSES), True)
    ref, _ = step_terms(full, data, torch.bfloat16)
    terms, grad = step_terms(half, data, torch.bfloat16)
    assert next(half.teacher.parameters()).dtype == DTYPES[teacher_dtype]
    assert torch.isfinite(grad).all()
    for key in ('loss_tat.backbone.layer4', 'loss_kd.head.fc'):
        assert torch.isfinite(terms[key])
        assert abs(float(terms[key] - ref[key])) <= 0.15 * abs(float(ref[key])), key


def test_teacher_float16_on_cpu_warns_and_bfloat16_does_not(tmp_path):
    from tat_mm.distill.teacher import parse_teacher_dtype
    with pytest.warns(UserWarning, match=r"float16.*without a GPU.*17x.*teacher_dtype='bfloat16'"):
        assert parse_teacher_dtype('float16') == torch.float16
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert parse_teacher_dtype('bfloat16') == torch.bfloat16
        assert parse_teacher_dtype(None) is None


# ---------------------------------------------------------------------------------- AMP wrapper
class CPUAutocastOptimWrapper(OptimWrapper):
    """What ``AmpOptimWrapper`` does, on CPU and in float16 as well: autocast + CPU GradScaler."""

    def __init__(self, dtype, init_scale=2.0**16, **kwargs):
        super().__init__(**kwargs)
        self.dtype = dtype
        self.loss_scaler = torch.amp.GradScaler('cpu', init_scale=init_scale,
                                                enabled=dtype == torch.float16)

    def backward(self, loss, **kwargs):
        self.loss_scaler.scale(loss).backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs):
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update()

    def optim_context(self, model):
        import contextlib
        stack = contextlib.ExitStack()
        stack.enter_context(super().optim_context(model))
        stack.enter_context(torch.autocast('cpu', dtype=self.dtype))
        return stack


@pytest.mark.parametrize('task', ['cls'])
def test_float16_train_step_with_loss_scaler(distillers, task):
    """A real train step through an AMP wrapper (float16 autocast + GradScaler): at 2**16 the
    gradient overflows and the scaler skips the step and halves its scale (the normal AMP event,
    the weights untouched); at the lowered scale the next step trains, master weights float32."""
    model = distillers[task].train()
    before = {k: v.detach().clone() for k, v in model.student.named_parameters()}
    optim = CPUAutocastOptimWrapper(torch.float16,
                                    optimizer=torch.optim.SGD(model.parameters(), lr=1e-3))
    batch = fake_batch(task, 2, AMP_SIZES[task], NUM_CLASSES)
    log_vars = model.train_step(batch, optim)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in log_vars.values())
    if optim.loss_scaler.get_scale() < 2.0**16:  # skipped: the weights did not move
        assert optim.loss_scaler.get_scale() == 2.0**15
        assert all(torch.equal(v, before[k]) for k, v in model.student.named_parameters())
    optim.loss_scaler.update(2.0**8)  # as after a few more skipped steps
    model.train_step(batch, optim)
    assert optim.loss_scaler.get_scale() == 2.0**8, 'the step at scale 2**8 overflowed'
    assert any(not torch.equal(v, before[k]) for k, v in model.student.named_parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def dafa_model(tmp_path):
    cfg = cls_distiller(tmp_path)
    cfg['distill'] = [dict(student='backbone.layer4', teacher='backbone.layer4', losses=[dict(
        type='DAFADistillLoss', feature_loss=dict(type='TaTLoss', student_channels=512,
                                                  teacher_channels=2048, query_embed='conv1x1',
                                                  value_embed='conv1x1'),
        search=dict(search_iters=2, seed=0, operations=['TranslateX', 'Noise', 'ChannelDrop']))])]
    return build('cls', cfg).train()


def test_dafa_search_runs_in_float32_and_normal_step_under_amp(tmp_path):
    """DAFA under AMP: the bi-level search passes run in float32 (autocast off, no loss scaler),
    the normal step under the AMP wrapper's autocast; the scaler sees the normal backward only."""
    from mmengine.optim import OptimWrapperDict
    model = dafa_model(tmp_path)
    search = model.pairs[0].losses[0].search
    seen = []
    model.student.backbone.layer4.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    params = [p for n, p in model.named_parameters() if '.search.' not in n]
    model_ow = CPUAutocastOptimWrapper(torch.bfloat16,
                                       optimizer=torch.optim.SGD(params, lr=1e-3, momentum=0.9))
    dafa_ow = OptimWrapper(torch.optim.Adam(search.parameters(), lr=5e-3))
    before = search.magnitudes.detach().clone()
    log_vars = model.train_step(fake_batch('cls', 2, SIZES['cls'], NUM_CLASSES),
                                OptimWrapperDict(model=model_ow, dafa=dafa_ow))
    # virtual step, un-augmented pass, w+ and w- in float32; then the normal step in bfloat16
    assert seen == [torch.float32] * 4 + [torch.bfloat16], seen
    assert torch.isfinite(log_vars['dafa.objective']) and torch.isfinite(log_vars['dafa.val_loss'])
    assert not torch.equal(search.magnitudes, before), 'the search step did not update the policy'
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------------------------- check_finite
def test_check_finite_says_float16_overflow_when_weights_are_finite(distillers):
    model = distillers['cls']
    terms = {'loss_tat.backbone.layer4': torch.tensor(float('inf')), 'loss_kd.head.fc': torch.tensor(1.0)}
    with torch.autocast('cpu', dtype=torch.float16):
        with pytest.raises(FloatingPointError, match=r'loss_tat.backbone.layer4 is inf\. Every '
                           r'weight is finite, so this is a float16 overflow.*loss scaler does '
                           r"not catch it.*dtype='bfloat16'") as info:
            model._check_finite(terms)
    assert 'loss_kd' not in str(info.value)
    with pytest.raises(FloatingPointError, match=r'ran in float32, so the value is NaN in float32 '
                       r'too'):
        model._check_finite({'loss_kd.head.fc': torch.tensor(float('nan'))})


def test_check_finite_says_nan_in_float32_too_when_weights_diverged(tmp_path):
    model = build('cls', cls_distiller(tmp_path))
    with torch.no_grad():
        model.student.backbone.conv1.weight[0, 0, 0, 0] = float('nan')
    with torch.autocast('cpu', dtype=torch.float16):
        with pytest.raises(FloatingPointError, match=r'not finite themselves \(student\.backbone\.'
                           r'conv1\.weight\), so the value is NaN in float32 too: the run diverged'):
            model._check_finite({'loss_kd.head.fc': torch.tensor(float('nan'))})


# ---------------------------------------------------------------------------------- device hygiene
FACTORIES = (torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.linspace,
             torch.eye, torch.tensor, torch.rand, torch.randn, torch.randint)


# A seed drawn from torch's (host) generator when DAFA samples outside a train step: a Python int.
HOST_ON_PURPOSE = {'randint in sample (feature_augment_search.py)'}


class DevicelessFactories(torch.overrides.TorchFunctionMode):
    """Records tat_mm code that creates a tensor without ``device=`` (it would land on the CPU
    next to CUDA features)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and 'device' not in kwargs and 'generator' not in kwargs:
            caller = sys._getframe(1).f_code
            where = f'{func.__name__} in {caller.co_name} ({osp.basename(caller.co_filename)})'
            if f'{os.sep}tat_mm{os.sep}' in caller.co_filename and where not in HOST_ON_PURPOSE:
                self.calls.append(where)
        return func(*args, **kwargs)


@pytest.mark.parametrize('name', LOSSES)
def test_loss_forward_creates_no_tensor_without_device(name):
    loss, student, teacher, extra = loss_case(name)
    loss.train()
    s = [x.clone().requires_grad_() for x in student]
    if name == 'DAMDistillLoss':  # with ground truth: CenterNet targets are made in the forward
        extra = dict(gt_boxes=[torch.tensor([[1.0, 1.0, 5.0, 4.0]])] * 2,
                     gt_labels=[torch.tensor([1])] * 2)
    with DevicelessFactories() as mode:
        total(call(loss, s, teacher, extra)).backward()
    assert not mode.calls, mode.calls


def test_distiller_step_creates_no_tensor_without_device(distillers):
    model = distillers['det']
    model.dam_gt_supervision = True
    data = model.data_preprocessor(fake_batch('det', 2, SIZES['det'], NUM_CLASSES), True)
    try:
        with DevicelessFactories() as mode:
            model.parse_losses(model(**data, mode='loss'))[0].backward()
    finally:
        model.dam_gt_supervision = False
    assert not mode.calls, mode.calls


@pytest.mark.parametrize('head', ['retinanet', 'gfl', 'atss', 'fcos'])
def test_crosskd_step_creates_no_tensor_without_device(head, tmp_path):
    """DetDistiller's cross head (CrossKD): targets, normalisers and terms on the batch's device."""
    model = build('det', crosskd_distiller(tmp_path, head)).train()
    data = model.data_preprocessor(fake_batch('det', 2, SIZES['det'], NUM_CLASSES), True)
    with DevicelessFactories() as mode:
        model.parse_losses(model(**data, mode='loss'))[0].backward()
    assert not mode.calls, mode.calls


def test_dam_and_areas_run_on_meta_device():
    """DAM's heads and area extraction on the ``meta`` device: a tensor made on the CPU inside
    would meet meta tensors and fail. (The losses themselves cannot run there: their float32
    islands need ``torch.autocast``, which has no meta device; the test above checks them.)"""
    from tat_mm.modules.area_extraction import extract_areas
    dam = ROOT_MODELS.build(dict(type='DAM', in_channels=CT, num_classes=NUM_CLASSES)).to('meta')
    out = dam(torch.empty(2, CT, 8, 8, device='meta'))
    areas = extract_areas(out['heatmap'], out['size'], out['offset'], k=4)
    assert all(v.device.type == 'meta' for v in areas.values())
    assert areas['mask'].shape == (2, 1, 8, 8) and out['heatmap'].dtype == torch.float32


# ---------------------------------------------------------------------------------- tools/train.py
def run_train(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'train.py'), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, **(env or {})))


@pytest.mark.skipif(torch.cuda.is_available(), reason='the check is for machines without a GPU')
def test_train_amp_without_gpu_says_so_before_building(tmp_path):
    config = tmp_path / 'cfg.py'
    # A model that cannot be built: the error must come before the runner builds anything.
    config.write_text("model = dict(type='NoSuchModel')\n"
                      "optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))\n")
    proc = run_train(str(config), '--amp', '--work-dir', str(tmp_path / 'w'))
    assert proc.returncode != 0
    assert '--amp needs a GPU' in proc.stderr and 'On CPU, train in float32' in proc.stderr
    assert 'NoSuchModel' not in proc.stderr
    assert not (tmp_path / 'w').exists()


def test_train_amp_with_other_optim_wrapper_type_is_a_clear_error(tmp_path):
    config = tmp_path / 'cfg.py'
    config.write_text("model = dict(type='NoSuchModel')\n"
                      "optim_wrapper = dict(type='MyOptimWrapper', optimizer=dict(type='SGD'))\n")
    sys.path.insert(0, str(ROOT / 'tools'))
    try:
        import train  # noqa: E402
    finally:
        sys.path.remove(str(ROOT / 'tools'))
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    with mock.patch('mmengine.device.is_cuda_available', return_value=True):
        with pytest.raises(SystemExit, match=r"--amp replaces the optimizer wrapper OptimWrapper "
                           r"by AmpOptimWrapper, but this config's optim_wrapper.type is "
                           r"'MyOptimWrapper'.*Run without --amp"):
            train.enable_amp(cfg)
        plain = Config(dict(optim_wrapper=dict(optimizer=dict(type='SGD'))))
        train.enable_amp(plain)
    assert plain.optim_wrapper.type == 'AmpOptimWrapper'
    assert plain.optim_wrapper.loss_scale == 'dynamic'


# ---------------------------------------------------------------------------------- runner + scale
def amp_wrapper_on_cpu():
    """MMEngine's own AmpOptimWrapper on CPU: its CUDA check lifted, torch's CPU GradScaler."""
    module = 'mmengine.optim.optimizer.amp_optimizer_wrapper'
    return (mock.patch(f'{module}.is_cuda_available', return_value=True),
            mock.patch(f'{module}.GradScaler', functools.partial(torch.amp.GradScaler, 'cpu')))


def test_runner_saves_and_resumes_the_loss_scale(tmp_path):
    """A real Runner with AmpOptimWrapper (bfloat16 autocast): the checkpoint holds the loss
    scaler's state and --resume restores it (a lowered scale stays lowered)."""
    from mmengine.runner import Runner
    from tat_mm.checkpoint_loading import load_checkpoint_file
    patch_cuda, patch_scaler = amp_wrapper_on_cpu()
    with patch_cuda, patch_scaler:
        cfg = cls_runner_config(tmp_path, tmp_path / 'run', max_iters=2)
        cfg['optim_wrapper'] = dict(cfg['optim_wrapper'], type='AmpOptimWrapper', dtype='bfloat16',
                                    loss_scale=dict(init_scale=512.0, growth_interval=1000))
        runner = Runner.from_cfg(cfg)
        runner.train()
        scaler = runner.optim_wrapper.loss_scaler
        assert scaler.is_enabled() and scaler.get_scale() == 512.0
        assert all(p.dtype == torch.float32 for p in runner.model.parameters())
        ckpt = load_checkpoint_file(str(tmp_path / 'run' / 'iter_2.pth'))
        assert ckpt['optimizer']['loss_scaler']['scale'] == 512.0
        # A scale the run lowered (as after overflowing steps) must come back on resume.
        ckpt['optimizer']['loss_scaler']['scale'] = 64.0
        torch.save(ckpt, str(tmp_path / 'run' / 'iter_2.pth'))
        cfg = cls_runner_config(tmp_path, tmp_path / 'run', max_iters=3)
        cfg['optim_wrapper'] = dict(cfg['optim_wrapper'], type='AmpOptimWrapper', dtype='bfloat16',
                                    loss_scale=dict(init_scale=512.0, growth_interval=1000))
        cfg.update(resume=True, load_from=str(tmp_path / 'run' / 'iter_2.pth'))
        resumed = Runner.from_cfg(cfg)
        resumed.train()
        assert resumed.iter == 3
        assert resumed.optim_wrapper.loss_scaler.get_scale() == 64.0
