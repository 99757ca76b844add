"""Checkpoints are loaded weights-only: malicious files are refused on every path, real ones load.

The real checkpoints are written by MMEngine runners training the demo distillers of the three
task libraries (configs/demo/*/tat.py, random teachers, 2 iterations on the built-in digits).
"""
import functools
import http.server
import importlib.util
import os
import os.path as osp
import subprocess
import sys
import threading
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint

import tat_mm  # noqa: F401
from distill_cases import cls_runner_config
from tat_mm.checkpoint_loading import (TRUST_ENV, CheckpointReadError, UnsafeCheckpointError,
                                       allowed_types, load_checkpoint_file)
from tat_mm.testing import offline_model_config, save_random_checkpoint

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))
from export_student import export_student, student_config  # noqa: E402

SCOPES = {'cls': 'mmpretrain', 'seg': 'mmseg', 'det': 'mmdet'}
for _library in SCOPES.values():
    pytest.importorskip(_library)


class WritesMarker:
    """Unpickling this object runs code: it writes the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f'open({self.path!r}, "w").write("code ran")', )


class ReachesGlobals:
    """Unpickling this asks for ``getattr(HistoryBuffer.min, '__globals__')`` (a way to code)."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return getattr, (HistoryBuffer.min, '__globals__')


class QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args):
        pass


def poisoned_copy(src, dst, payload) -> str:
    """``src`` (a real checkpoint) with ``payload`` added to its ``meta``."""
    ckpt = load_checkpoint_file(str(src))
    if 'state_dict' not in ckpt:
        ckpt = {'state_dict': ckpt}
    ckpt.setdefault('meta', {})['payload'] = payload
    torch.save(ckpt, str(dst))
    return str(dst)


# ------------------------------------------------------------------ real runner checkpoints
class RecordLosses(Hook):

    def __init__(self):
        self.losses = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses[runner.iter + 1] = {k: float(v) for k, v in outputs.items()}


def demo_runner_config(task: str, tmp, work_dir, rng_hook: bool = True) -> Config:
    """configs/demo/<task>/tat.py for 2 iterations of batch 2, a checkpoint every iteration."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo', task, 'tat.py'))
    teacher_config = osp.join(ROOT, 'configs', 'demo', task, 'teacher.py')
    teacher_ckpt = tmp / f'{task}_teacher.pth'
    if not teacher_ckpt.exists():
        save_random_checkpoint(SCOPES[task], offline_model_config(teacher_config), teacher_ckpt)
    cfg.model.teacher = dict(config=teacher_config, checkpoint=str(teacher_ckpt))
    cfg.work_dir = str(work_dir)
    cfg.custom_hooks = [dict(type='RNGStateHook')] if rng_hook else []
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=10**6)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    if task == 'det':  # mmdet's usual schedule: MultiStepLR (its milestones are a Counter)
        cfg.param_scheduler = [
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
            dict(type='MultiStepLR', milestones=[1], by_epoch=False)]
    cfg.log_level = 'WARNING'
    return cfg


def train(cfg: Config, name: str, **overrides) -> dict:
    runner = Runner.from_cfg(Config(dict(cfg.to_dict(), experiment_name=name, **overrides)))
    recorder = RecordLosses()
    runner.register_hook(recorder)
    runner.train()
    return recorder.losses


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Per task: an uninterrupted 2-iteration run and a resume of its iteration-1 checkpoint."""
    tmp = tmp_path_factory.mktemp('ckpt_safety')
    cwd = os.getcwd()
    os.chdir(tmp)  # the demo configs write the digits data under ./data
    try:
        out = {'tmp': tmp}
        for task in SCOPES:
            full = train(demo_runner_config(task, tmp, tmp / task / 'full'), f'{task}_full')
            resumed = train(demo_runner_config(task, tmp, tmp / task / 'resumed'),
                            f'{task}_resumed', resume=True,
                            load_from=str(tmp / task / 'full' / 'iter_1.pth'))
            out[task] = dict(full=full, resumed=resumed, ckpt=tmp / task / 'full' / 'iter_2.pth')
        # What MMEngine alone restores: the segmentation head's dropout draws other masks.
        out['seg']['resumed_without_hook'] = train(
            demo_runner_config('seg', tmp, tmp / 'seg' / 'no_hook', rng_hook=False), 'seg_no_hook',
            resume=True, load_from=str(tmp / 'seg' / 'full' / 'iter_1.pth'))
        yield out
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize('task', list(SCOPES))
def test_allow_list_covers_real_runner_checkpoints(runs, task):
    path = str(runs[task]['ckpt'])
    ckpt = load_checkpoint_file(path)
    assert {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers',
            'rng_state'} <= set(ckpt)
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in needed  # plain torch refuses it
    with torch.serialization.safe_globals(allowed_types()):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []


@pytest.mark.parametrize('task', list(SCOPES))
def test_resume_gives_identical_next_step_losses(runs, task):
    full, resumed = runs[task]['full'], runs[task]['resumed']
    assert sorted(full) == [1, 2] and sorted(resumed) == [2]
    assert resumed[2] == full[2]  # bit-identical: weights, optimizer, schedulers, data, RNG


def test_resume_without_rng_hook_differs_where_dropout_draws(runs):
    seg = runs['seg']
    assert seg['resumed_without_hook'][2]['loss'] != seg['full'][2]['loss']


# ------------------------------------------------------------------ malicious files
@pytest.fixture
def cls_cfg(tmp_path):
    return cls_runner_config(tmp_path, tmp_path / 'work', max_iters=1)


def build_distiller(model_cfg):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    return MODELS.build(Config(dict(model=model_cfg)).model)


def test_malicious_teacher_is_refused_and_opt_in_loads(cls_cfg, tmp_path):
    marker = tmp_path / 'marker'
    evil = poisoned_copy(cls_cfg['model']['teacher']['checkpoint'], tmp_path / 'evil.pth',
                         WritesMarker(marker))
    cls_cfg['model']['teacher']['checkpoint'] = evil
    with pytest.raises(UnsafeCheckpointError) as info:
        build_distiller(cls_cfg['model'])
    message = str(info.value)
    assert evil in message and 'builtins.exec' in message and 'trust_checkpoint=True' in message
    assert not marker.exists()
    # The explicit opt-in unpickles the file fully (and so runs its code).
    cls_cfg['model']['teacher']['trust_checkpoint'] = True
    build_distiller(cls_cfg['model'])
    assert marker.exists()


def test_malicious_teacher_url_is_refused(cls_cfg, tmp_path, monkeypatch):
    marker = tmp_path / 'marker'
    served = tmp_path / 'served'
    served.mkdir()
    poisoned_copy(cls_cfg['model']['teacher']['checkpoint'], served / 'teacher.pth',
                  WritesMarker(marker))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))  # the download cache
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/teacher.pth'
        cls_cfg['model']['teacher']['checkpoint'] = url
        with pytest.raises(UnsafeCheckpointError, match=r'contains (builtins\.)?exec\b'):
            build_distiller(cls_cfg['model'])
    finally:
        server.shutdown()
    assert not marker.exists()


class ReachesInit:
    """Unpickling this asks for ``getattr(OneCycleParamScheduler, '__init__')``."""

    def __reduce__(self):
        from mmengine.optim.scheduler.param_scheduler import OneCycleParamScheduler
        return getattr, (OneCycleParamScheduler, '__init__')


def test_getattr_is_limited_to_the_listed_functions(tmp_path):
    from mmengine.optim.scheduler.param_scheduler import OneCycleParamScheduler
    path = str(tmp_path / 'one_cycle.pth')
    # What MMEngine's OneCycleLR writes into `param_schedulers` (not in the demo runs).
    torch.save({'param_schedulers': [{'anneal_func': OneCycleParamScheduler._annealing_cos}]}, path)
    loaded = _load_checkpoint(path, map_location='cpu')
    assert loaded['param_schedulers'][0]['anneal_func'] is OneCycleParamScheduler._annealing_cos
    for payload, attribute in ((ReachesGlobals(), '__globals__'), (ReachesInit(), '__init__')):
        torch.save({'state_dict': {}, 'meta': {'x': payload}}, path)
        with pytest.raises(UnsafeCheckpointError, match=attribute):
            _load_checkpoint(path, map_location='cpu')


def test_malicious_load_from_and_resume_are_refused_and_env_opt_in_loads(runs, tmp_path,
                                                                        monkeypatch):
    marker = tmp_path / 'marker'
    evil_dir = tmp_path / 'evil'
    evil_dir.mkdir()
    evil = poisoned_copy(runs['cls']['ckpt'], evil_dir / 'iter_2.pth', WritesMarker(marker))
    monkeypatch.chdir(runs['tmp'])  # the digits data
    monkeypatch.delenv(TRUST_ENV, raising=False)
    cfg = demo_runner_config('cls', runs['tmp'], tmp_path / 'work')
    runner = Runner.from_cfg(Config(dict(cfg.to_dict(), experiment_name='evil', load_from=evil)))
    # load_from (Runner.load_or_resume), then what --resume calls (Runner.resume).
    for load in (runner.load_or_resume, lambda: runner.resume(evil)):
        with pytest.raises(UnsafeCheckpointError) as info:
            load()
        assert evil in str(info.value) and TRUST_ENV in str(info.value)
        assert not marker.exists()
    # Opt in for the file, or for its directory.
    for trusted in (evil, f'/nonexistent,{evil_dir}'):
        monkeypatch.setenv(TRUST_ENV, trusted)
        runner.resume(evil)
        assert marker.exists() and runner.iter == 2
        marker.unlink()


# ------------------------------------------------------------------ formats that must load
def _upstream_v0_meta():
    """The meta of an mmseg v0.x / mmdet v2 (mmcv 1.x runner) checkpoint."""
    return dict(mmseg_version='0.30.0', mmcv_version='1.7.1', config='model = dict(...)\n',
                env_info='sys.platform: linux', seed=np.int64(0), exp_name='x.py',
                CLASSES=('background', 'cat'), PALETTE=np.random.randint(0, 255, (2, 3)),
                epoch=12, iter=np.int64(1000), time='Fri Mar 10 12:00:00 2023',
                hook_msgs=dict(last_ckpt='/x/epoch_12.pth', best_score=np.float64(0.5)))


def _as_numpy1_file(src, dst):
    """``src`` as numpy 1.x writes it (its pickle names ``numpy.core.multiarray``)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w') as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith('data.pkl'):
                data = data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
            zout.writestr(item, data)


@pytest.mark.parametrize('form', ['state_dict_only', 'v0_meta', 'v0_meta_numpy1', 'v0_meta_legacy'])
def test_upstream_checkpoint_formats_load(form, tmp_path):
    model = torch.nn.Linear(3, 2)
    path = str(tmp_path / 'ckpt.pth')
    if form == 'state_dict_only':  # torchvision / converted checkpoints
        torch.save(model.state_dict(), path)
    else:
        ckpt = dict(meta=_upstream_v0_meta(), state_dict=OrderedDict(model.state_dict()))
        torch.save(ckpt, path, _use_new_zipfile_serialization=form != 'v0_meta_legacy')
        if form == 'v0_meta_numpy1':
            _as_numpy1_file(path, path + '.np1')
            path += '.np1'
    plain = torch.nn.Linear(3, 2)
    loaded = load_checkpoint(plain, path, map_location='cpu', strict=True)
    assert torch.equal(plain.weight, model.weight)
    if form != 'state_dict_only':
        assert loaded['meta']['PALETTE'].shape == (2, 3)
        assert float(loaded['meta']['hook_msgs']['best_score']) == 0.5


def test_state_dict_only_teacher_loads(cls_cfg, tmp_path):
    teacher = cls_cfg['model']['teacher']
    state = load_checkpoint_file(teacher['checkpoint'])['state_dict']
    torch.save(state, str(tmp_path / 'bare.pth'))
    teacher['checkpoint'] = str(tmp_path / 'bare.pth')
    distiller = build_distiller(cls_cfg['model'])
    assert all(torch.equal(v, state[k]) for k, v in distiller.teacher.state_dict().items())


def test_truncated_file_error_names_the_file(cls_cfg, tmp_path):
    data = open(cls_cfg['model']['teacher']['checkpoint'], 'rb').read()
    for name, content in (('truncated.pth', data[:len(data) // 2]), ('empty.pth', b'')):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointReadError, match=str(path)):
            _load_checkpoint(str(path), map_location='cpu')
        cls_cfg['model']['teacher']['checkpoint'] = str(path)
        with pytest.raises(CheckpointReadError, match='truncated'):
            build_distiller(cls_cfg['model'])


def test_random_bytes_are_damage_not_danger(tmp_path):
    """Random bytes are unreadable, not unsafe (which would push users to switch the protection
    off); a malicious file in torch's legacy (non-zip) format is still refused as unsafe."""
    rng = np.random.default_rng(0)
    # Some start like pickles do (PROTO 2, protocol 4 with FRAME, GLOBAL), or like a zip archive.
    for i, prefix in enumerate([b''] * 30 + [b'\x80\x02', b'\x80\x04\x95', b'c', b'PK\x03\x04']):
        path = tmp_path / f'random_{i}.pth'
        path.write_bytes(prefix + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        with pytest.raises(CheckpointReadError, match=f'{path}.*truncated or corrupted'):
            _load_checkpoint(str(path), map_location='cpu')
        with open(path, 'rb') as f, pytest.raises(CheckpointReadError):
            load_checkpoint_file(f)
    marker = tmp_path / 'marker'
    legacy = tmp_path / 'legacy_evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': {'x': WritesMarker(marker)}},
               str(legacy), _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match='exec'):
        _load_checkpoint(str(legacy), map_location='cpu')
    assert not marker.exists()
    torch.save({'state_dict': {'w': torch.ones(1)}}, str(legacy), _use_new_zipfile_serialization=False)
    assert torch.equal(_load_checkpoint(str(legacy), map_location='cpu')['state_dict']['w'],
                       torch.ones(1))


# ------------------------------------------------------------------ evaluation: no teacher file
def test_inference_build_needs_no_teacher_file(cls_cfg, tmp_path):
    cls_cfg['model']['teacher']['checkpoint'] = str(tmp_path / 'missing.pth')
    with pytest.raises(FileNotFoundError, match='missing.pth'):  # training: an error at build time
        build_distiller(cls_cfg['model'])
    cls_cfg['model']['teacher']['load_checkpoint'] = False
    distiller = build_distiller(cls_cfg['model'])
    images = torch.rand(2, 3, 32, 32)
    assert distiller(images, mode='tensor').shape == (2, 10)  # the student runs
    from tat_mm.testing import fake_batch
    batch = distiller.data_preprocessor(fake_batch('cls', 2, (32, 32), 10), True)
    with pytest.raises(RuntimeError, match='load_checkpoint=False'):
        distiller(**batch, mode='loss')


def test_tools_test_runs_without_the_teacher_file(runs, tmp_path, monkeypatch, capsys):
    tmp = runs['tmp']
    cfg = demo_runner_config('cls', tmp, tmp_path / 'test')
    cfg.model.teacher.checkpoint = str(tmp_path / 'missing.pth')
    cfg.test_dataloader.dataset.indices = 20  # a few images are enough here
    cfg.log_level = 'INFO'  # the metric line
    cfg_path = tmp_path / 'cfg.py'
    cfg.dump(str(cfg_path))
    spec = importlib.util.spec_from_file_location('tools_test', osp.join(ROOT, 'tools', 'test.py'))
    tools_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tools_test)
    monkeypatch.chdir(tmp)  # the digits data
    monkeypatch.setattr(sys, 'argv', ['test.py', str(cfg_path), str(runs['cls']['ckpt']),
                                      '--work-dir', str(tmp_path / 'test'),
                                      '--cfg-options', 'experiment_name=tools_test'])
    tools_test.main()  # no FileNotFoundError for the teacher
    assert 'accuracy/top1' in capsys.readouterr().out


# ------------------------------------------------------------------ exported students
INFERENCE_SCRIPT = r'''
import sys
sys.modules['tat_mm'] = None  # tat_mm cannot be imported in this process
import torch
from mmengine.config import Config
for task, cfg_path, ckpt in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
    cfg = Config.fromfile(cfg_path, import_custom_modules=False)
    if task == 'seg':
        from mmseg.apis import init_model
        model = init_model(cfg, ckpt, device='cpu')
    elif task == 'det':  # palette given: mmdet would build the test dataset (tat_mm's digits)
        from mmdet.apis import init_detector
        model = init_detector(cfg, ckpt, palette='random', device='cpu')
    else:
        from mmpretrain import get_model
        model = get_model(cfg, pretrained=ckpt, device='cpu')
    total = sum(float(v.double().sum()) for v in model.state_dict().values()
                if v.dtype.is_floating_point)
    meta = getattr(model, 'dataset_meta', None) or getattr(model, '_dataset_meta', None) or {}
    print(task, type(model).__name__, repr(total), 'classes' in meta)
'''


def test_exported_students_load_in_plain_libraries(runs, tmp_path):
    args, expected = [], {}
    for task in SCOPES:
        src = str(runs[task]['ckpt'])
        dst = str(tmp_path / f'{task}_student.pth')
        export_student(src, dst)
        exported = torch.load(dst, map_location='cpu', weights_only=True)  # plain torch, no list
        student_cfg = Config.fromstring(exported['meta']['cfg'], '.py')
        assert 'teacher' not in student_cfg.model and 'Distiller' not in student_cfg.model.type
        assert osp.isfile(dst[:-len('.pth')] + '.py')
        state = load_checkpoint_file(src)['state_dict']
        expected[task] = sum(float(v.double().sum()) for k, v in state.items()
                             if k.startswith('student.') and v.dtype.is_floating_point)
        args += [task, dst[:-len('.pth')] + '.py', dst]
    out = subprocess.run([sys.executable, '-c', INFERENCE_SCRIPT, *args], capture_output=True,
                         text=True, cwd=str(runs['tmp']), timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    lines = {line.split()[0]: line.split() for line in out.stdout.splitlines()
             if line.split() and line.split()[0] in SCOPES}
    assert set(lines) == set(SCOPES), out.stdout
    for task, fields in lines.items():
        assert float(fields[2]) == pytest.approx(expected[task], rel=1e-9), task
        assert fields[3] == 'True', f'{task}: dataset_meta (classes) not passed on'


def test_student_config_drops_the_tat_mm_import():
    distiller = Config(dict(
        custom_imports=dict(imports=['tat_mm', 'my_project'], allow_failed_imports=False),
        data_preprocessor=dict(mean=[0.0] * 3, std=[1.0] * 3),
        model=dict(type='ClsDistiller', student=dict(type='ImageClassifier', backbone={}),
                   teacher=dict(config={}, checkpoint='t.pth'), distill=[]),
        train_dataloader=dict(dataset=dict(type='ImageNet')), load_from='x.pth'))
    plain = student_config(distiller)
    assert plain.model.type == 'ImageClassifier' and plain.load_from is None
    assert plain.model.data_preprocessor.mean == [0.0] * 3
    assert plain.custom_imports.imports == ['my_project']


def test_a_url_that_cannot_be_downloaded_names_the_url_and_the_way_round():
    """Offline (or a dead URL): one error naming the URL and what to set, not urllib's traceback."""
    from tat_mm.checkpoint_loading import CheckpointDownloadError, load_checkpoint_file
    url = 'http://127.0.0.1:9/resnet101_teacher.pth'  # loopback, nothing listens on port 9
    with pytest.raises(CheckpointDownloadError) as info:
        load_checkpoint_file(url)
    message = str(info.value)
    assert url in message and 'model.teacher.checkpoint=<file>' in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
