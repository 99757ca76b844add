"""Bad configs give clear errors at build time or at the first step, never silent garbage."""
import copy
import re

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

import tat_mm  # noqa: F401
from distill_cases import (CLS_STUDENT, CLS_TEACHER, NUM_CLASSES, SIZES, cls_distiller,
                           save_checkpoint)
from tat_mm.testing import fake_batch, offline_model_config


def build(cfg):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    return MODELS.build(cfg)


def step(model):
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    return model.train_step(fake_batch('cls', 2, SIZES['cls'], NUM_CLASSES), optim_wrapper)


@pytest.fixture(scope='module')
def base_cfg(tmp_path_factory):
    return cls_distiller(tmp_path_factory.mktemp('errors'))


def test_wrong_module_path_suggests_close_names(base_cfg):
    cfg = copy.deepcopy(base_cfg)
    cfg['distill'][0]['student'] = 'backbone.layr4'
    with pytest.raises(ValueError, match=r"student.*no module 'backbone.layr4'.*backbone.layer4"):
        build(cfg)
    cfg = copy.deepcopy(base_cfg)
    cfg['distill'][1]['teacher'] = 'head.fcc'
    with pytest.raises(ValueError, match=r"teacher.*'head.fcc'.*head.fc"):
        build(cfg)


def test_missing_teacher_checkpoint(base_cfg, tmp_path):
    cfg = copy.deepcopy(base_cfg)
    cfg['teacher']['checkpoint'] = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='teacher checkpoint .*nope.pth.* does not exist'):
        build(cfg)
    cfg['teacher']['checkpoint'] = None
    with pytest.raises(ValueError, match='teacher.checkpoint` is not set'):
        build(cfg)


def test_checkpoint_of_the_wrong_architecture(base_cfg, tmp_path):
    cfg = copy.deepcopy(base_cfg)
    # a ResNet-18 checkpoint for the ResNet-50 teacher
    cfg['teacher']['checkpoint'] = save_checkpoint(
        'mmpretrain', offline_model_config(CLS_STUDENT, NUM_CLASSES), tmp_path / 'r18.pth')
    with pytest.raises(ValueError, match=r'(?s)does not match.*missing keys: backbone\..*unexpected '
                                         r'keys: none.*shape mismatches: backbone'):
        build(cfg)


def test_teacher_from_local_config_file(base_cfg, tmp_path):
    from mmengine.config import Config
    path = tmp_path / 'teacher.py'
    Config(dict(model=offline_model_config(CLS_TEACHER, NUM_CLASSES))).dump(str(path))
    cfg = copy.deepcopy(base_cfg)
    cfg['teacher']['config'] = str(path)
    model = build(cfg)
    assert type(model.teacher).__name__ == 'ImageClassifier'
    cfg['teacher']['config'] = 'mmpretrain::resnet/resnet500.py'
    with pytest.raises(FileNotFoundError, match='resnet500'):
        build(cfg)


def test_channel_mismatch_names_the_tap(base_cfg):
    cfg = copy.deepcopy(base_cfg)
    cfg['distill'][0]['losses'][0]['student_channels'] = 256  # the real layer4 has 512
    model = build(cfg)
    with pytest.raises(ValueError, match=r"backbone.layer4.*TaTLoss.*256.*512|backbone.layer4.*512.*256"):
        step(model)


def test_spatial_mismatch_needs_resize(base_cfg):
    cfg = copy.deepcopy(base_cfg)
    cfg['distill'] = [dict(student='backbone.layer3', teacher='backbone.layer4',
                           losses=[dict(type='FitNetLoss', student_channels=256, teacher_channels=2048)])]
    with pytest.raises(ValueError, match='spatial sizes differ.*resize=True'):
        step(build(cfg))
    cfg['distill'][0]['resize'] = True
    log_vars = step(build(cfg))
    assert torch.isfinite(log_vars['loss_fitnet.backbone.layer3'])


def test_empty_distill(base_cfg):
    cfg = copy.deepcopy(base_cfg)
    cfg['distill'] = []
    with pytest.raises(ValueError, match='distill` is empty'):
        build(cfg)


def test_nan_loss_is_an_error(base_cfg, tmp_path):
    cfg = copy.deepcopy(base_cfg)
    state = torch.load(cfg['teacher']['checkpoint'], weights_only=False)
    state['state_dict']['head.fc.bias'][0] = float('nan')
    torch.save(state, tmp_path / 'nan_teacher.pth')
    cfg['teacher']['checkpoint'] = str(tmp_path / 'nan_teacher.pth')
    with pytest.raises(FloatingPointError, match=r'loss_kd.head.fc is .*nan'):
        step(build(cfg))


def test_duplicate_log_keys_are_an_error(base_cfg):
    cfg = copy.deepcopy(base_cfg)
    # the same student tap against two teacher layers, same loss type: same log key
    cfg['distill'] = [
        dict(student='backbone.layer4', teacher='backbone.layer4',
             losses=[dict(type='FitNetLoss', student_channels=512, teacher_channels=2048)]),
        dict(student='backbone.layer4', teacher='backbone.layer4.2',
             losses=[dict(type='FitNetLoss', student_channels=512, teacher_channels=2048)]),
    ]
    with pytest.raises(ValueError, match=r"loss_fitnet.backbone.layer4.*produced twice.*name"):
        step(build(cfg))
    cfg['distill'][1]['losses'][0]['name'] = 'fitnet_last_block'
    assert 'loss_fitnet_last_block.backbone.layer4' in step(build(cfg))


def test_pooled_output_is_named_as_such(base_cfg):
    """A (B, C) feature (what the classifier layer receives, after global pooling) against a map:
    not 'spatial sizes differ ... resize=True', but the 2-D case, the tap and what to change."""
    cfg = copy.deepcopy(base_cfg)
    cfg['distill'] = [dict(student='head.fc', teacher='backbone.layer4', use_input=True,
                           losses=[dict(type='FitNetLoss', student_channels=512,
                                        teacher_channels=1024)])]
    with pytest.raises(ValueError) as info:
        step(build(cfg))
    message = str(info.value)
    assert 'spatial sizes differ' not in message and 'resize' not in message
    assert re.search(r"student 'head.fc.input' gives \(2, 512\), pooled \(B, C\).*teacher "
                     r"'backbone.layer4.input' gives \(2, 1024, 4, 4\).*the student tap "
                     r"'head.fc.input' is already pooled: tap an earlier student module", message), message
    # Pooled on both sides, into a feature loss: the loss's error says the outputs are pooled.
    cfg['distill'][0].update(teacher='head.fc', losses=[dict(type='TaTLoss', student_channels=512,
                                                               teacher_channels=2048)])
    with pytest.raises(ValueError, match=r'expected 4D.*pooled \(B, C\) outputs.*tap earlier modules'):
        step(build(cfg))


def test_loss_type_typo_suggests_close_names(base_cfg):
    cfg = copy.deepcopy(base_cfg)
    cfg['distill'][0]['losses'][0]['type'] = 'TatLoss'
    with pytest.raises(KeyError, match=r"Unknown loss type 'TatLoss' in the distill entry "
                                       r"'backbone.layer4' -> 'backbone.layer4'\. Did you mean TaTLoss"):
        build(cfg)
    # Also inside a wrapping loss (DAM's feature loss).
    cfg = copy.deepcopy(base_cfg)
    cfg['distill'][0]['losses'][1]['feature_loss']['type'] = 'TaTLos'
    with pytest.raises(KeyError, match=r"'TaTLos' in the distill entry 'backbone.layer4'.*TaTLoss"):
        build(cfg)
