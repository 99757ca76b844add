"""teacher_mode: a Mask2Former teacher (its decode head needs the batch's data samples) tapped in
its pixel decoder, distilled into a DeepLabV3+ R18 student: the upstream mmseg configs, random
weights, 64x64 images, one real train step."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS

import tat_mm  # noqa: F401
from distill_cases import NUM_CLASSES, SEG_STUDENT, SIZES
from tat_mm.distill.tap_inspection import check_distill_taps, inspect_model
from tat_mm.distill.teacher_mode import (needs_data_samples, prepare_teacher,
                                         resolve_teacher_mode)
from tat_mm.testing import fake_batch, offline_model_config, save_random_checkpoint

MASK2FORMER = 'mmseg::mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.py'


@pytest.fixture(scope='module')
def mask2former_cfg(tmp_path_factory):
    teacher = offline_model_config(MASK2FORMER, NUM_CLASSES, SIZES['seg'])
    path = save_random_checkpoint('mmseg', teacher, tmp_path_factory.mktemp('m2f') / 'm2f.pth', seed=1)
    return dict(
        type='SegDistiller', student=offline_model_config(SEG_STUDENT, NUM_CLASSES, SIZES['seg']),
        teacher=dict(config=teacher, checkpoint=path),
        distill=[
            # The pixel decoder returns (mask features at stride 4, [multi-scale features]).
            dict(student='decode_head.sep_bottleneck', teacher='decode_head.pixel_decoder',
                 index=dict(teacher=0),
                 losses=[dict(type='FitNetLoss', student_channels=128, teacher_channels=256)]),
        ])


def build(cfg):
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(cfg)


def test_mask2former_teacher_pixel_decoder_tap_trains(mask2former_cfg):
    model = build(mask2former_cfg)
    # 'auto': the teacher's decode head needs data samples, so the teacher runs in predict mode;
    # a DeepLabV3+ (the student) would run in tensor mode.
    assert model.teacher_mode == 'predict'
    assert needs_data_samples(model.teacher.decode_head)
    assert resolve_teacher_mode('auto', model.student, ['decode_head.sep_bottleneck']) == 'tensor'
    # The teacher stops at the pixel decoder: its transformer decoder never runs.
    ran = []
    handle = model.teacher.decode_head.transformer_decoder.register_forward_hook(
        lambda *args: ran.append(True))
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    log_vars = model.train_step(fake_batch('seg', 2, SIZES['seg'], NUM_CLASSES), optim)
    handle.remove()
    assert not ran
    key = 'loss_fitnet.decode_head.sep_bottleneck'
    assert {key, 'loss'} <= set(log_vars) and torch.isfinite(log_vars[key]) and log_vars[key] > 0
    assert all(torch.equal(v, teacher_before[k]) for k, v in model.teacher.state_dict().items())
    assert not any(k.startswith('teacher.') for k in model.state_dict())
    # validate_taps runs the teacher the same way: the entry fits.
    assert check_distill_taps(model, SIZES['seg']) == []
    # The inspector's tensor pass fails in the decode head: the modules after it are "not
    # reached" (unknown), not "not run"; what ran before is listed.
    tensor = inspect_model(model.teacher, 'mmseg', SIZES['seg'], 'tensor')
    assert 'batch_data_samples' in tensor.error and tensor.not_run == []
    assert 'decode_head.pixel_decoder' in tensor.not_reached
    assert any(c.name == 'backbone.layer4' for c in tensor.candidates)


def test_tensor_mode_on_mask2former_says_to_set_teacher_mode(mask2former_cfg):
    model = build(dict(mask2former_cfg, teacher_mode='tensor'))
    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    with pytest.raises(TypeError, match=r"(?s)teacher_mode='tensor'.*batch_data_samples.*Set "
                                        r"teacher_mode='predict'"):
        model.train_step(fake_batch('seg', 2, SIZES['seg'], NUM_CLASSES), optim)
    with pytest.raises(ValueError, match=r"teacher_mode='eval'; expected one of auto, tensor, "
                                         r'predict, loss'):
        resolve_teacher_mode('eval', model.teacher, ['decode_head.pixel_decoder'])


def test_predict_mode_runs_a_sliding_window_teacher_on_the_whole_input():
    """In predict mode an mmseg teacher with test_cfg.mode='slide' would fire its taps on the
    first crop only: it runs on the whole input (tensor mode leaves it as it is)."""
    teacher = torch.nn.Module()
    teacher.test_cfg = dict(mode='slide', crop_size=(32, 32), stride=(16, 16))
    prepare_teacher(teacher, 'tensor')
    assert teacher.test_cfg['mode'] == 'slide'
    prepare_teacher(teacher, 'predict')
    assert teacher.test_cfg == dict(mode='whole', crop_size=(32, 32), stride=(16, 16))


def test_loss_mode_teacher_gets_the_ground_truth_and_stops_at_its_tap(mask2former_cfg):
    """teacher_mode='loss' (set by hand): the teacher's loss path gets the batch's data samples
    with their ground truth, runs in eval mode under no_grad, and stops after its tap as in the
    other modes, with the same features as in predict mode."""
    batch = fake_batch('seg', 2, SIZES['seg'], NUM_CLASSES)
    features = {}
    for mode in ('loss', 'predict'):
        model = build(dict(mask2former_cfg, teacher_mode=mode))
        assert model.teacher_mode == mode
        seen = []
        handle = model.teacher.decode_head.register_forward_pre_hook(
            lambda module, args: seen.append((module.training, torch.is_grad_enabled())))
        decoder_ran = []
        handle2 = model.teacher.decode_head.transformer_decoder.register_forward_hook(
            lambda *args: decoder_ran.append(True))
        model.train()
        data = model.data_preprocessor(copy.deepcopy(batch), True)
        _, teacher_feats = model.tapped_features(data['inputs'], data['data_samples'])
        handle.remove()
        handle2.remove()
        assert seen == [(False, False)] and not decoder_ran
        features[mode] = teacher_feats
    # Keyed by tap and index (the pixel decoder's output 0).
    assert list(features['loss']) == list(features['predict']) == ['decode_head.pixel_decoder.0']
    assert torch.equal(features['loss']['decode_head.pixel_decoder.0'],
                       features['predict']['decode_head.pixel_decoder.0'])
