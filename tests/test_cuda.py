"""The CUDA lane: real train steps, AMP, checkpoints and a one-process NCCL run on a GPU.

Every test here is marked ``cuda``: skipped (and counted as skipped) where
``torch.cuda.is_available()`` is False (tests/conftest.py). ``tools/gpu_check.sh`` runs them on
one GPU. MMEngine's ``AmpOptimWrapper`` runs unmodified here (on CPU, tests/test_amp.py lifts its
CUDA check to test the same paths in bfloat16).
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper, OptimWrapper, OptimWrapperDict
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import tat_mm  # noqa: F401
from distill_cases import (CLS_STUDENT, NUM_CLASSES, SIZES, cls_distiller, cls_runner_config,
                           crosskd_distiller, det_distiller, seg_distiller)
from tat_mm.testing import fake_batch, offline_model_config, free_port

pytestmark = pytest.mark.cuda

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCOPES = {'cls': 'mmpretrain', 'seg': 'mmseg', 'det': 'mmdet'}
CASES = {
    'cls': ('cls', cls_distiller),
    'seg': ('seg', seg_distiller),
    'det_faster_rcnn': ('det', lambda p: det_distiller(p, 'faster_rcnn')),
    'det_retinanet': ('det', lambda p: det_distiller(p, 'retinanet')),
    'det_gfl_crosskd': ('det', lambda p: crosskd_distiller(p, 'gfl')),
    'det_fcos_crosskd': ('det', lambda p: crosskd_distiller(p, 'fcos')),
}


def build(task, cfg):
    init_default_scope(SCOPES[task])
    import importlib
    return importlib.import_module(f'{SCOPES[task]}.registry').MODELS.build(cfg)


def on_cuda(module):
    tensors = list(module.parameters()) + list(module.buffers())
    return all(t.device.type == 'cuda' for t in tensors)


@pytest.mark.parametrize('amp', ['fp32', 'amp'])
@pytest.mark.parametrize('case', list(CASES))
def test_train_step_on_cuda(case, amp, tmp_path):
    """Two train steps on the GPU, in float32 and with AmpOptimWrapper (float16 + loss scaler):
    the teacher follows the student to the GPU, every term is finite, the weights stay float32."""
    task, make = CASES[case]
    model = build(task, make(tmp_path)).cuda().train()
    assert on_cuda(model) and on_cuda(model.teacher), 'the teacher must be on the student\'s device'
    params = model.parameters()
    optim = (AmpOptimWrapper(optimizer=torch.optim.SGD(params, lr=1e-3), loss_scale='dynamic')
             if amp == 'amp' else OptimWrapper(torch.optim.SGD(params, lr=1e-3)))
    before = {k: v.detach().clone() for k, v in model.student.named_parameters()}
    for step in range(2):
        log_vars = model.train_step(fake_batch(task, 2, SIZES[task], NUM_CLASSES, seed=step), optim)
    for key, value in log_vars.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), key
    distill = [k for k in log_vars if k.startswith('loss_') and '.' in k]
    assert distill and any(float(log_vars[k]) != 0 for k in distill)
    assert any(not torch.equal(v, before[k]) for k, v in model.student.named_parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert on_cuda(model) and on_cuda(model.teacher)
    if amp == 'amp':
        assert optim.loss_scaler.is_enabled() and optim.loss_scaler.get_scale() > 0


@pytest.mark.parametrize('teacher_dtype', ['float16', 'bfloat16'])
def test_half_teacher_with_amp_student_on_cuda(teacher_dtype, tmp_path):
    if teacher_dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
        pytest.skip('this GPU has no bfloat16')
    model = build('cls', dict(cls_distiller(tmp_path), teacher_dtype=teacher_dtype)).cuda().train()
    assert next(model.teacher.parameters()).dtype == getattr(torch, teacher_dtype)
    assert on_cuda(model.teacher)
    optim = AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=1e-3))
    log_vars = model.train_step(fake_batch('cls', 2, SIZES['cls'], NUM_CLASSES), optim)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())


def test_dafa_bilevel_step_with_amp_on_cuda(tmp_path):
    """DAFA on the GPU under AMP: search passes in float32, the normal step through the scaler."""
    cfg = cls_distiller(tmp_path)
    cfg['distill'] = [dict(student='backbone.layer4', teacher='backbone.layer4', losses=[dict(
        type='DAFADistillLoss', feature_loss=dict(type='TaTLoss', student_channels=512,
                                                  teacher_channels=2048),
        search=dict(search_iters=2, seed=0))])]
    model = build('cls', cfg).cuda().train()
    search = model.pairs[0].losses[0].search
    seen = []
    model.student.backbone.layer4.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    params = [p for n, p in model.named_parameters() if '.search.' not in n]
    optim = OptimWrapperDict(
        model=AmpOptimWrapper(optimizer=torch.optim.SGD(params, lr=1e-3, momentum=0.9)),
        dafa=OptimWrapper(torch.optim.Adam(search.parameters(), lr=5e-3)))
    before = search.magnitudes.detach().clone()
    log_vars = model.train_step(fake_batch('cls', 2, SIZES['cls'], NUM_CLASSES), optim)
    assert seen == [torch.float32] * 4 + [torch.float16], seen
    assert torch.isfinite(log_vars['dafa.objective'])
    assert not torch.equal(search.magnitudes, before)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def amp_runner_config(tmp_path, work_dir, max_iters):
    cfg = cls_runner_config(tmp_path, work_dir, max_iters=max_iters)
    cfg['optim_wrapper'] = dict(cfg['optim_wrapper'], type='AmpOptimWrapper',
                                loss_scale=dict(init_scale=1024.0, growth_interval=1000))
    return cfg


def test_amp_runner_checkpoint_resume_and_export_load_on_cpu(tmp_path):
    """A Runner trains on the GPU with AMP; the checkpoint holds the loss scale, --resume restores
    it, and the exported student loads into a plain mmpretrain model on the CPU."""
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    from tat_mm.checkpoint_loading import load_checkpoint_file
    runner = Runner.from_cfg(amp_runner_config(tmp_path, tmp_path / 'run', 2))
    runner.train()
    assert next(runner.model.parameters()).device.type == 'cuda'
    assert on_cuda(runner.model.teacher)
    ckpt_path = str(tmp_path / 'run' / 'iter_2.pth')
    ckpt = load_checkpoint_file(ckpt_path, map_location='cpu')
    assert ckpt['optimizer']['loss_scaler']['scale'] == 1024.0
    assert all(v.device.type == 'cpu' for v in ckpt['state_dict'].values())
    ckpt['optimizer']['loss_scaler']['scale'] = 64.0  # as lowered by overflowing steps
    torch.save(ckpt, ckpt_path)
    cfg = amp_runner_config(tmp_path, tmp_path / 'run', 3)
    cfg.update(resume=True, load_from=ckpt_path)
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    assert resumed.iter == 3 and resumed.optim_wrapper.loss_scaler.get_scale() == 64.0

    dst = tmp_path / 'student.pth'
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/export_student.py'),
                          str(tmp_path / 'run' / 'iter_3.pth'), str(dst)],
                         capture_output=True, text=True, cwd=ROOT, env=dict(
                             os.environ, CUDA_VISIBLE_DEVICES=''))  # the export runs on a CPU
    assert out.returncode == 0, out.stderr[-3000:]
    init_default_scope('mmpretrain')
    plain = MODELS.build(offline_model_config(CLS_STUDENT, 10))
    load_checkpoint(plain, str(dst), map_location='cpu', strict=True)
    images = torch.rand(2, 3, 32, 32)
    student = resumed.model.student.eval()
    with torch.no_grad():
        assert torch.allclose(plain.eval()(images, mode='tensor'),
                              student(images.cuda(), mode='tensor').cpu(), atol=1e-4)


def test_save_teacher_checkpoint_from_cuda_loads_on_cpu(tmp_path):
    model = build('cls', dict(cls_distiller(tmp_path), save_teacher=True)).cuda()
    path = tmp_path / 'with_teacher.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    on_cpu = build('cls', dict(cls_distiller(tmp_path), save_teacher=False))
    state = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    on_cpu.load_state_dict(state, strict=True)
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(on_cpu.teacher.state_dict()[key], value.cpu()), key


def test_dist_train_one_process_nccl(tmp_path):
    """tools/dist_train.sh CONFIG 1 with NCCL and --amp: one process on one GPU trains and saves."""
    cfg = cls_runner_config(tmp_path, tmp_path / 'x', max_iters=2)
    cfg['env_cfg'] = dict(dist_cfg=dict(backend='nccl'))
    cfg_path = tmp_path / 'cfg.py'
    Config(cfg).dump(str(cfg_path))
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), CUDA_VISIBLE_DEVICES=os.environ.get(
        'CUDA_VISIBLE_DEVICES', '0').split(',')[0])
    out = subprocess.run(['bash', osp.join(ROOT, 'tools/dist_train.sh'), str(cfg_path), '1',
                          '--work-dir', str(tmp_path / 'dist'), '--amp'],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=540)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    from tat_mm.checkpoint_loading import load_checkpoint_file
    ckpt = load_checkpoint_file(str(tmp_path / 'dist' / 'iter_2.pth'), map_location='cpu')
    assert 'loss_scaler' in ckpt['optimizer']
    assert any(k.startswith('student.') for k in ckpt['state_dict'])
