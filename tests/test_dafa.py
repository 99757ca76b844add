"""DAFA in the distillers: the bi-level step against a plain reference, real train steps with the
three task libraries, the search schedule, resume, export, distributed training and bad input."""
import copy
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.optim import OptimWrapper, OptimWrapperDict, build_optim_wrapper
from mmengine.registry import MODELS
from mmengine.runner import Runner

import tat_mm  # noqa: F401
from distill_cases import NUM_CLASSES, SIZES, cls_distiller, cls_runner_config, det_distiller, \
    seg_distiller
from tat_mm.distill import BaseDistiller
from tat_mm.losses import DAFADistillLoss
from tat_mm.testing import fake_batch, free_port
from test_distillers import build

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
NO_CUTOUT = ['Rotate', 'TranslateX', 'Noise', 'ChannelDrop', 'ChannelShuffle']


# ----------------------------------------------------------------- a tiny linear student
@MODELS.register_module()
class DAFATinyLinearNet(BaseModel):
    """(B, 3, 8, 8) -> 1x1 conv (linear, 4 channels) -> mean -> linear classifier."""

    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.body = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        logits = self.head(self.body(inputs).mean((2, 3)))
        if mode == 'loss':
            return dict(loss_cls=F.cross_entropy(logits, data_samples))
        return logits

    def loss(self, inputs, data_samples):
        return self(inputs, data_samples, mode='loss')


def tiny_distiller(tmp_path, **search):
    teacher = DAFATinyLinearNet().double()
    torch.save(dict(state_dict=teacher.state_dict()), tmp_path / 'tiny_teacher.pth')
    search = dict(dict(search_iters=1, sub_policies=[('Noise', 'Cutout'), ('Cutout', 'Noise')],
                       init_probability=0.99, seed=3), **search)
    net = dict(type='DAFATinyLinearNet', data_preprocessor=dict(type='ImgDataPreprocessor'))
    model = BaseDistiller(
        student=net,
        teacher=dict(config=net,
                     checkpoint=str(tmp_path / 'tiny_teacher.pth')),
        distill=[dict(student='body', teacher='body', losses=[
            dict(type='DAFADistillLoss', search=search,
                 feature_loss=dict(type='FitNetLoss', student_channels=4, teacher_channels=4,
                                   connector='identity'))])])
    # ImgDataPreprocessor casts to float32; this test runs in float64 on ready-made tensors.
    model.data_preprocessor = model.student.data_preprocessor = BaseDataPreprocessor()
    return model.double().train()


def test_implicit_gradient_matches_explicit_second_order(tmp_path):
    """The search step's hypergradient vs. the DARTS formula computed exactly (double backprop).

    Reference: w' = w - xi (g + wd w + mu buf); v = dL_val(w')/dw'; f = <dL_dafa(w)/dw, v>;
    d magnitudes = -xi df/dm (exact second derivative), d probabilities = -xi RELAX(f).
    """
    torch.manual_seed(0)
    model = tiny_distiller(tmp_path)
    search = model.pairs[0].losses[0].search
    data = dict(inputs=torch.randn(4, 3, 8, 8, dtype=torch.float64),
                data_samples=torch.tensor([0, 1, 1, 0]))
    params = list(model.student.parameters())
    mu, wd, xi, lr_dafa = 0.9, 1e-2, 0.01, 1e-3
    sgd = torch.optim.SGD(params, lr=0.1, momentum=mu, weight_decay=wd)
    for p in params:  # a momentum buffer from "earlier steps"
        sgd.state[p]['momentum_buffer'] = torch.randn_like(p)
    dafa_sgd = torch.optim.SGD(search.parameters(), lr=lr_dafa)
    optim = OptimWrapperDict(model=OptimWrapper(sgd), dafa=OptimWrapper(dafa_sgd))

    # ---- reference, written out
    sample = search.sample(0)
    assert sample.apply[sample.index].all(), 'the reference wants both operations applied'
    w0 = [p.detach().clone() for p in params]

    def losses():
        return model.loss(data['inputs'], data['data_samples'])

    g = torch.autograd.grad(sum(losses().values()), params)
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.sub_(xi * (gi + wd * p + mu * sgd.state[p]['momentum_buffer']))
    search.augment = False
    v = torch.autograd.grad(sum(losses().values()), params)
    search.augment = True
    with torch.no_grad():
        for p, p0 in zip(params, w0):
            p.copy_(p0)
    search.magnitude_grad = True
    dafa_term = losses()['loss_dafa.body']
    search.magnitude_grad = False
    d_w = torch.autograd.grad(dafa_term, params, create_graph=True, allow_unused=True)
    f = sum((a * b).sum() for a, b in zip(d_w, v) if a is not None)  # the head has no DAFA term
    (d_m, ) = torch.autograd.grad(f, [search.magnitudes])
    expected_m = search.magnitudes.detach() - lr_dafa * (-xi * d_m)
    relax = search.relax_gradients(f.detach())
    expected_p = search.probabilities.detach() - lr_dafa * (-xi * relax['probabilities'])
    search.current = None
    assert d_m.abs().max() > 0

    # ---- the distiller's step
    log_vars = model.train_step(data, optim)
    torch.testing.assert_close(log_vars['dafa.objective'], f.detach(), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(search.magnitudes.detach(), expected_m, rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(search.probabilities.detach(), expected_p, rtol=1e-6, atol=1e-10)
    assert search.step == 1


# ----------------------------------------------------------------- the three task libraries
def dafa(feature_loss, search_iters=2, **search):
    return dict(type='DAFADistillLoss', feature_loss=feature_loss,
                search=dict(search_iters=search_iters, seed=0, **search))


def cls_dafa(tmp_path, **search):
    cfg = cls_distiller(tmp_path)  # backbone.layer4 is 2x2 at 64x64: no Cutout
    cfg['distill'][0]['losses'] = [dafa(dict(type='TaTLoss', student_channels=512,
                                             teacher_channels=2048, loss_weight=0.2),
                                        operations=NO_CUTOUT, **search)]
    return cfg


def seg_dafa(tmp_path):  # DAFA around DAM around FitNet (the _dam_dafa shape), 16x16 map
    return seg_distiller(tmp_path, losses=[dafa(dict(
        type='DAMDistillLoss', topk=4, feature_loss=dict(type='FitNetLoss'), student_channels=128,
        teacher_channels=512, dam=dict(num_classes=NUM_CLASSES)))])


def det_dafa(tmp_path):
    cfg = det_distiller(tmp_path)
    cfg['distill'] = [dict(student='neck', teacher='neck', index=[0, 1], losses=[dafa(dict(
        type='FitNetLoss', student_channels=256, teacher_channels=256))])]
    return cfg


def dafa_optim(model, momentum=0.9):
    return build_optim_wrapper(model, dict(
        constructor='DAFAOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.01, momentum=momentum)))


CASES = {'cls': cls_dafa, 'seg': seg_dafa, 'det': det_dafa}


@pytest.mark.parametrize('task', list(CASES))
def test_train_steps_search_then_freeze(task, tmp_path):
    model = build(task, CASES[task](tmp_path)).train()
    optim = dafa_optim(model)
    searches = [m.search for m in model.modules() if isinstance(m, DAFADistillLoss)]
    search_ids = {id(p) for s in searches for p in s.parameters()}
    model_ids = {id(p) for g in optim['model'].param_groups for p in g['params']}
    assert not search_ids & model_ids
    assert search_ids == {id(p) for g in optim['dafa'].param_groups for p in g['params']}
    assert optim['dafa'].optimizer.defaults['betas'] == (0.5, 0.999)
    assert not {id(p) for p in model.teacher.parameters()} & (model_ids | search_ids)
    teacher_state = {k: v.clone() for k, v in model.teacher.state_dict().items()}

    def search_state():
        return [p.detach().clone() for s in searches for p in s.parameters()]

    states = [search_state()]
    for step in range(3):  # search_iters=2: two search steps, then a normal one
        log_vars = model.train_step(fake_batch(task, 2, SIZES[task], NUM_CLASSES, seed=step), optim)
        states.append(search_state())
        assert any(k.startswith('loss_dafa') for k in log_vars), sorted(log_vars)
        assert ('dafa.objective' in log_vars) == (step < 2)
        for key, value in log_vars.items():
            assert torch.isfinite(torch.as_tensor(value)).all(), key
    for before, after in zip(states[:2], states[1:3]):
        assert any(not torch.equal(a, b) for a, b in zip(before, after)), 'search did not move'
    assert all(torch.equal(a, b) for a, b in zip(states[2], states[3])), 'policy not frozen'
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), f'teacher {k} changed'
    if task == 'seg':
        assert {'loss_dafa_dam.decode_head.sep_bottleneck',
                'loss_dafa_feat.decode_head.sep_bottleneck'} <= set(log_vars)


def test_search_interval_and_single_optimizer_after_search(tmp_path):
    model = build('cls', cls_dafa(tmp_path, search_interval=2, search_iters=3)).train()
    optim = dafa_optim(model, momentum=0.0)
    ran = [('dafa.objective' in model.train_step(fake_batch('cls', 2, SIZES['cls'], NUM_CLASSES,
                                                             seed=i), optim)) for i in range(4)]
    assert ran == [True, False, True, False]
    # after the search phase a plain single optimizer is enough
    model.train_step(fake_batch('cls', 2, SIZES['cls'], NUM_CLASSES), optim['model'])


# ----------------------------------------------------------------- bad input
def test_bad_input_errors(tmp_path):
    model = build('cls', cls_dafa(tmp_path)).train()
    plain = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    with pytest.raises(ValueError, match='needs a second optimizer'):
        model.train_step(fake_batch('cls', 2, SIZES['cls'], NUM_CLASSES), plain)

    cfg = cls_distiller(tmp_path)  # default operations include Cutout: 2x2 layer4 is too small
    cfg['distill'][0]['losses'] = [dafa(dict(type='TaTLoss', student_channels=512,
                                             teacher_channels=2048))]
    model = build('cls', cfg).train()
    with pytest.raises(ValueError, match='too small for the cutout'):
        model.train_step(fake_batch('cls', 2, SIZES['cls'], NUM_CLASSES), dafa_optim(model))

    for search, message in ((dict(search_iters=1, operations=['Rotate', 'Sharpen']),
                             "Unknown DAFA operation 'Sharpen'"),
                            (dict(search_iters=1, magnitude_ranges=dict(Noise=(0, 20))),
                             'out of range'),
                            (dict(operations=['Rotate', 'Noise']), 'search_iters')):
        cfg['distill'][0]['losses'] = [dict(type='DAFADistillLoss', search=search,
                                            feature_loss=dict(type='FitNetLoss'),
                                            student_channels=512, teacher_channels=2048)]
        with pytest.raises(ValueError, match=message):
            build('cls', copy.deepcopy(cfg))


# ----------------------------------------------------------------- runner: resume, export, DDP
def runner_config(tmp_path, work_dir, max_iters=4, batch_size=4):
    cfg = cls_runner_config(tmp_path, work_dir, max_iters=max_iters, batch_size=batch_size)
    # 32x32 digits: layer2 is 4x4 (too small for Cutout)
    cfg['model']['distill'].append(dict(
        student='backbone.layer2', teacher='backbone.layer2',
        losses=[dafa(dict(type='FitNetLoss', student_channels=128, teacher_channels=128),
                     search_iters=4, operations=NO_CUTOUT)]))
    cfg['optim_wrapper'] = dict(constructor='DAFAOptimWrapperConstructor', **cfg['optim_wrapper'])
    cfg['model_wrapper_cfg'] = dict(type='DAFADistributedDataParallel')
    return cfg


def run(cfg, name, **overrides):
    from mmengine.hooks import Hook

    class Recorder(Hook):
        losses = {}

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.losses[runner.iter + 1] = {k: float(v) for k, v in outputs.items()}

    runner = Runner.from_cfg(Config(dict(cfg, experiment_name=name, **overrides)))
    recorder = Recorder()
    recorder.losses = {}
    runner.register_hook(recorder)
    runner.train()
    return recorder.losses, runner


def test_resume_in_search_phase_and_export(tmp_path):
    base = runner_config(tmp_path, tmp_path / 'full')
    full, full_runner = run(base, 'full', log_level='INFO')
    half_cfg = dict(base, work_dir=str(tmp_path / 'half'))
    run(half_cfg, 'half', train_cfg=dict(base['train_cfg'], max_iters=2))
    resumed, resumed_runner = run(half_cfg, 'resumed', resume=True,
                                  load_from=str(tmp_path / 'half' / 'iter_2.pth'))
    assert sorted(resumed) == [3, 4]
    for it in (3, 4):
        assert 'dafa.objective' in full[it]
        for key in full[it]:
            assert resumed[it][key] == pytest.approx(full[it][key], rel=1e-4, abs=1e-6), (it, key)
    final = {k: v for k, v in full_runner.model.state_dict().items() if '.search.' in k}
    for k, v in resumed_runner.model.state_dict().items():
        if k in final:
            torch.testing.assert_close(v, final[k], rtol=1e-4, atol=1e-6)

    ckpt = torch.load(tmp_path / 'half' / 'iter_2.pth', map_location='cpu', weights_only=False)
    assert any(k.endswith('search.probabilities') for k in ckpt['state_dict'])
    assert set(ckpt['optimizer']) >= {'model', 'dafa'}  # both optimizers' states
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/export_student.py'),
                          str(tmp_path / 'half' / 'iter_2.pth'), str(tmp_path / 'student.pth')],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    exported = torch.load(tmp_path / 'student.pth', map_location='cpu')['state_dict']
    assert exported and not any('search' in k or 'pairs' in k for k in exported)
    # the learnt policy is in the log at the end of the search
    logs = [p for p in (tmp_path / 'full').rglob('*.log')]
    assert any('DAFA search finished after 4 iterations' in p.read_text() for p in logs)


def test_dist_train_runs(tmp_path):
    cfg = runner_config(tmp_path, tmp_path / 'x', max_iters=2, batch_size=2)
    cfg_path = tmp_path / 'cfg.py'
    Config(cfg).dump(str(cfg_path))
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', PORT=str(free_port()))
    out = subprocess.run(['bash', osp.join(ROOT, 'tools/dist_train.sh'), str(cfg_path), '2',
                          '--work-dir', str(tmp_path / 'dist')],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    state = torch.load(tmp_path / 'dist' / 'iter_2.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    probabilities = [v for k, v in state.items() if k.endswith('search.probabilities')]
    assert probabilities and not torch.all(probabilities[0] == 0.5), 'no search step ran'


def test_demo_dafa_run_draws_the_policy(tmp_path):
    """The demo's tat_dafa config trains through tools/demo.py and the visualization hook draws
    the learnt policy (and the TaT attention inside the DAFA wrapper)."""
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'demo.py'), '--quick', '--tasks', 'cls',
         '--methods', 'tat_dafa', '--no-figures', '--work-dir', str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'student + TaT + DAFA' in proc.stdout
    images = {osp.basename(p) for p in
              map(str, (tmp_path / 'cls' / 'tat_dafa' / 'seed0').rglob('*.png'))}
    assert {'dafa_policy_0_3.png', 'tat_attention_3.png'} <= images, images
