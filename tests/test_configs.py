"""The config zoo (``configs/``): every config parses, takes ``--cfg-options`` overrides, builds its
model (teachers get generated checkpoints) and its data pipeline; one config per task trains a step.

No data, internet or GPU: download URLs and SyncBN are stripped with
:func:`tat_mm.testing.offline_model_config`, teacher checkpoints are random weights saved once per
teacher config (module-scoped cache), and the train steps run on :func:`tat_mm.testing.fake_batch`
with the config's own optimizer and lr schedule.
``configs/demo/`` is tested with the demo; ``_base_`` helpers are covered by the configs using them.
"""
import copy
import functools
import importlib
from pathlib import Path

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS, DefaultScope

import tat_mm  # noqa: F401  (registers the distillers, losses and CIFAR backbones)
from tat_mm.distill import resolve_model_config
from tat_mm.testing import fake_batch, offline_model_config, save_random_checkpoint

CONFIG_ROOT = Path(__file__).resolve().parents[1] / 'configs'
CONFIGS = sorted(
    str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob('*.py')
    if p.relative_to(CONFIG_ROOT).parts[0] != 'demo' and '_base_' not in p.parts)
TASKS = {'mmseg': 'seg', 'mmpretrain': 'cls', 'mmdet': 'det'}
DISTILLERS = ('SegDistiller', 'ClsDistiller', 'DetDistiller')
# One config per task trains one iteration: (config, input size).
TRAIN_STEP = {
    'seg/deeplabv3plus_r101_to_r18_voc_tat.py': (64, 64),
    'cls/resnet34_to_resnet18_in1k_tat.py': (64, 64),
    'det/faster-rcnn_r101_to_r50_fpn_1x_coco_tat.py': (64, 96),
    # DAM (ground-truth supervised) around HierarchicalTaTLoss on P2-P3, around TaT on P4-P6
    'det/faster-rcnn_r101_to_r50_fpn_1x_coco_tat_dam.py': (64, 96),
}
# The distillation terms each of them must log.
EXPECTED_KEYS = {
    'seg/deeplabv3plus_r101_to_r18_voc_tat.py': {
        'loss_tat_pg.decode_head.sep_bottleneck', 'loss_tat_ap.decode_head.sep_bottleneck'},
    'cls/resnet34_to_resnet18_in1k_tat.py': {'loss_tat.backbone.layer4'},
    'det/faster-rcnn_r101_to_r50_fpn_1x_coco_tat.py': {
        'loss_tat_pg.neck.0', 'loss_tat_ap.neck.0', 'loss_tat_pg.neck.1', 'loss_tat_ap.neck.1',
        'loss_tat.neck.2', 'loss_tat.neck.3', 'loss_tat.neck.4'},
    'det/faster-rcnn_r101_to_r50_fpn_1x_coco_tat_dam.py': {
        *(f'{key}.neck.{level}' for level in (0, 1) for key in (
            'loss_dam_feat_tat_pg', 'loss_dam_feat_tat_ap', 'loss_dam', 'loss_dam_gt')),
        *(f'{key}.neck.{level}' for level in (2, 3, 4) for key in (
            'loss_dam_feat', 'loss_dam', 'loss_dam_gt'))},
}


@functools.lru_cache(maxsize=None)
def _load(name: str) -> Config:
    # Unformatted dumps: yapf's formatting of the dumped text (MMEngine's, ~0.7 s a config) is
    # not what the round trip in test_config_parses_and_overrides checks.
    return Config.fromfile(str(CONFIG_ROOT / name), format_python_code=False)


def load(name: str) -> Config:
    """A fresh copy of the parsed config (parsing is cached: it reads the upstream bases)."""
    return copy.deepcopy(_load(name))


def registry(scope: str, kind: str = 'MODELS'):
    return getattr(importlib.import_module(f'{scope}.registry'), kind)


def runner_model_config(cfg: Config) -> ConfigDict:
    """``cfg.model`` as MMEngine's runner builds it: the top-level ``data_preprocessor`` (if any)
    is the default of the model's."""
    model = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    return model


@pytest.fixture(scope='module')
def teacher_checkpoints(tmp_path_factory):
    """Random-weight teacher checkpoints, one per teacher config (R101 builds are slow)."""
    cache = {}
    folder = tmp_path_factory.mktemp('teachers')

    def get(teacher: dict, scope: str):
        key = repr(teacher['config']) + repr(teacher.get('cfg_options'))
        if key not in cache:
            model_cfg = offline_model_config(teacher['config'])
            if teacher.get('cfg_options'):
                model_cfg.merge(teacher['cfg_options'])
            path = save_random_checkpoint(scope, model_cfg, folder / f'teacher_{len(cache)}.pth')
            cache[key] = (model_cfg, path)
        return cache[key]

    return get


def offline_distiller(cfg: Config, teacher_checkpoints, input_size=None) -> ConfigDict:
    """The config's model, buildable offline: generated teacher checkpoint, no downloads, BN."""
    model = runner_model_config(cfg)
    scope = cfg.default_scope
    if model.type in DISTILLERS:
        teacher_cfg, path = teacher_checkpoints(model.teacher, scope)
        # The offline teacher model dict (no SyncBN / downloads) with its generated checkpoint.
        model.teacher = dict(config=copy.deepcopy(teacher_cfg), checkpoint=path)
        model.student = offline_model_config(model.student, input_size=input_size)
        if model.get('data_preprocessor') is not None and input_size is not None \
                and 'size' in model.data_preprocessor:
            model.data_preprocessor.size = tuple(input_size)
    else:
        model = offline_model_config(model, input_size=input_size)
    return model


def build_model(cfg: Config, model_cfg: dict):
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return registry(cfg.default_scope).build(model_cfg)


def test_configs_found():
    names = set(CONFIGS)
    assert 'seg/deeplabv3plus_r101_to_r18_voc_tat.py' in names
    assert set(TRAIN_STEP) <= names
    for task in ('seg', 'cls', 'det'):
        assert any(n.startswith(f'{task}/') for n in names)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_parses_and_overrides(name):
    cfg = load(name)
    assert cfg.default_scope in TASKS, f'{name}: default_scope {cfg.default_scope!r}'
    assert 'tat_mm' in cfg.custom_imports['imports']
    assert cfg.custom_imports.get('allow_failed_imports') is False
    text = (CONFIG_ROOT / name).read_text()
    assert text.startswith('#') and 'tools/train.py' in text, f'{name}: header comment missing'
    for key in ('train_dataloader', 'val_dataloader', 'train_cfg', 'optim_wrapper', 'model'):
        assert key in cfg, f'{name}: no {key}'
    # --cfg-options style overrides, as tools/train.py applies them.
    cfg.merge_from_dict({'train_dataloader.batch_size': 1, 'train_cfg.val_interval': 1,
                         'optim_wrapper.optimizer.lr': 0.001})
    assert cfg.train_dataloader.batch_size == 1
    assert cfg.optim_wrapper.optimizer.lr == 0.001
    if cfg.model.type in DISTILLERS:
        cfg.merge_from_dict({'model.teacher.checkpoint': 'other.pth'})
        assert cfg.model.teacher.checkpoint == 'other.pth'
        # The student is a complete model config of the library, the teacher config resolves.
        assert 'type' in cfg.model.student and 'data_preprocessor' not in cfg.model
        assert resolve_model_config(cfg.model.teacher.config).type == cfg.model.student.type
    # Dumping (what the runner writes to the work_dir) and re-reading gives the same config.
    dumped = Config.fromstring(cfg.dump(), '.py')
    assert dumped.model.to_dict() == cfg.model.to_dict()


def _datasets(dataset: dict):
    if dataset.get('type') in ('ConcatDataset', 'RepeatDataset', 'ClassBalancedDataset'):
        inner = dataset.get('datasets') or [dataset['dataset']]
        for d in inner:
            yield from _datasets(d)
    else:
        yield dataset


@pytest.mark.parametrize('name', CONFIGS)
def test_dataset_and_pipelines_build(name):
    cfg = load(name)
    scope = cfg.default_scope
    datasets = registry(scope, 'DATASETS')
    transforms = registry(scope, 'TRANSFORMS')
    with DefaultScope.overwrite_default_scope(scope):
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            for dataset in _datasets(cfg[loader].dataset):
                assert datasets.get(dataset.type) is not None, f'{name}: unknown {dataset.type}'
                assert dataset.pipeline, f'{name}: empty {loader} pipeline'
                for transform in dataset.pipeline:
                    transforms.build(copy.deepcopy(transform))
        assert cfg.val_evaluator.type


@pytest.mark.parametrize('name', CONFIGS)
def test_model_builds(name, teacher_checkpoints):
    cfg = load(name)
    model = build_model(cfg, offline_distiller(cfg, teacher_checkpoints))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    if cfg.model.type in DISTILLERS:
        # The student is the student-alone model of the base config.
        assert type(model.student).__name__ == cfg.model.student.type
        # tap pairs, or CrossKD's cross head (the crosskd configs have no feature entries)
        assert len(model.pairs) >= 1 or getattr(model, 'cross_head', None) is not None
        assert not any(p.requires_grad for p in model.teacher.parameters())


@pytest.mark.parametrize('name', sorted(TRAIN_STEP))
def test_one_train_step(name, teacher_checkpoints):
    cfg = load(name)
    size = TRAIN_STEP[name]
    task = TASKS[cfg.default_scope]
    num_classes = {'seg': 21, 'cls': 1000, 'det': 80}[task]
    model = build_model(cfg, offline_distiller(cfg, teacher_checkpoints, input_size=size))
    model.train()
    # The config's own optimizer (lr multipliers included) and lr schedule build on the distiller.
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        schedulers = cfg.param_scheduler
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            PARAM_SCHEDULERS.build(dict(scheduler, optimizer=optim_wrapper))
    assert isinstance(optim_wrapper, OptimWrapper)
    assert not {id(p) for p in model.teacher.parameters()} & {
        id(p) for group in optim_wrapper.param_groups for p in group['params']}
    if task == 'seg':  # 10x lr on the student's heads, as the authors' scripts
        base_lr = cfg.optim_wrapper.optimizer.lr
        head = {id(p) for p in model.student.decode_head.parameters()}
        lrs = {group['lr'] for group in optim_wrapper.param_groups
               if any(id(p) in head for p in group['params'])}
        assert lrs and all(abs(lr - 10 * base_lr) < 1e-9 for lr in lrs), lrs
    torch.manual_seed(0)
    batch = fake_batch(task, 2, size, num_classes)
    log_vars = model.train_step(batch, optim_wrapper)
    distill_keys = [k for k in log_vars if k.startswith('loss_') and '.' in k]
    assert distill_keys, f'{name}: no distillation term in {sorted(log_vars)}'
    for key, value in log_vars.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), f'{name}: {key} = {value}'
    expected = EXPECTED_KEYS[name]
    assert expected <= set(log_vars), f'{name}: {sorted(log_vars)}'


def test_cifar_backbones_match_reference_shapes():
    """CRD's CIFAR nets: stage widths, strides and parameter counts (tat_mm.models.cifar_backbones)."""
    from tat_mm.models.cifar_backbones import CIFARResNet, CIFARVGG, CIFARWideResNet

    x = torch.randn(2, 3, 32, 32)
    cases = [
        # net, expected last-stage shape, parameters in millions (CRD / RepDistiller counts,
        # without the 100-way classifier)
        (CIFARResNet(depth=20), (64, 8, 8), 0.27),
        (CIFARResNet(depth=56), (64, 8, 8), 0.85),
        (CIFARResNet(depth=110), (64, 8, 8), 1.73),
        (CIFARResNet(depth=8, channels=(32, 64, 128, 256)), (256, 8, 8), 1.22),
        (CIFARResNet(depth=32, channels=(32, 64, 128, 256)), (256, 8, 8), 7.41),
        (CIFARWideResNet(depth=40, widen_factor=2), (128, 8, 8), 2.24),
        (CIFARWideResNet(depth=16, widen_factor=2), (128, 8, 8), 0.69),
        (CIFARWideResNet(depth=40, widen_factor=1), (64, 8, 8), 0.56),
        (CIFARVGG(depth=13), (512, 4, 4), 9.41),
        (CIFARVGG(depth=8), (512, 4, 4), 3.91),
    ]
    for net, shape, millions in cases:
        net.init_weights()
        out = net(x)
        assert isinstance(out, tuple) and len(out) == 1
        assert tuple(out[0].shape) == (2, ) + shape, type(net).__name__
        params = sum(p.numel() for p in net.parameters()) / 1e6
        assert abs(params - millions) / millions < 0.03, (type(net).__name__, params, millions)
    outs = CIFARResNet(depth=20, out_indices=(0, 1, 2))(x)
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    outs = CIFARVGG(depth=8, out_indices=(0, 1, 2, 3, 4))(x)
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4, 4]
    with pytest.raises(ValueError, match='6n \\+ 2'):
        CIFARResNet(depth=21)
    with pytest.raises(ValueError, match='6n \\+ 4'):
        CIFARWideResNet(depth=41)
    with pytest.raises(ValueError, match='depth must be one of'):
        CIFARVGG(depth=12)
