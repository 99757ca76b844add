"""The tap finder (tools/inspect_taps.py, tat_mm.distill.tap_inspection) and validate_taps=True,
on the real upstream models of tests/distill_cases.py (R18 students, R50 teachers) at 64x64."""
import copy
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS

from distill_cases import NUM_CLASSES, SEG_STUDENT, SIZES, cls_distiller, seg_distiller
from tat_mm.distill.tap_inspection import (TapCandidate, build_config_models, check_distill_taps,
                                           entry_for_pair, fake_inputs, input_size_from_config,
                                           inspect_model, suggest_pairs, token_grid)
from tat_mm.testing import offline_model_config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(autouse=True)
def mmseg_scope():
    """mmseg's MODELS builds in the current default scope: pin it (earlier tests leave mmdet's)."""
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


@pytest.fixture(scope='module')
def seg_cfg(tmp_path_factory):
    """The seg distiller of distill_cases (its teacher checkpoint written once)."""
    return seg_distiller(tmp_path_factory.mktemp('seg'))


def test_token_grid():
    assert token_grid(197, (224, 224)) == (14, 14, 1)  # ViT: class token + 14x14
    assert token_grid(198, (224, 224)) == (14, 14, 2)  # DeiT: class + distillation token
    assert token_grid(16 * 24, (64, 96)) == (16, 24, 0)  # stride 4, no extra token
    assert token_grid(1000, (64, 64)) is None  # no square grid + at most 8 extra tokens


def test_inspect_lists_modes_shapes_and_strides(seg_cfg):
    """Student in loss mode runs the auxiliary head; the teacher in tensor mode (as the distiller
    runs it) does not, so the listing must say it cannot be tapped there."""
    models = build_config_models(Config(dict(model=seg_cfg, default_scope='mmseg')))
    assert models['scope'] == 'mmseg' and models['teacher'] is not None
    student, s_not_run, s_error, *_ = inspect_model(models['student'], 'mmseg', (64, 64), 'loss')
    teacher, t_not_run, t_error, *_ = inspect_model(models['teacher'], 'mmseg', (64, 64), 'tensor')
    assert s_error is None and t_error is None
    s_by_name = {c.name: c for c in student}
    t_by_name = {c.name: c for c in teacher}
    sep = s_by_name['decode_head.sep_bottleneck']
    assert (sep.shape, sep.channels, sep.stride) == ((2, 128, 16, 16), 128, 4.0)
    assert t_by_name['decode_head.sep_bottleneck'].channels == 512
    # The dilated ResNets (d8): tuple outputs listed per index, layer4 at stride 8.
    assert s_by_name['backbone[3]'].shape == (2, 512, 8, 8)
    assert t_by_name['backbone.layer4'].shape == (2, 2048, 8, 8)
    assert 'auxiliary_head.conv_seg' in s_by_name and 'auxiliary_head.conv_seg' not in s_not_run
    assert 'auxiliary_head.conv_seg' in t_not_run and 'auxiliary_head.conv_seg' not in t_by_name
    # mmseg calls decode_head.loss() / decode_head.forward(), not decode_head(): its hook never
    # fires, so a tap on 'decode_head' itself would record nothing (its layers can be tapped).
    assert 'decode_head' in s_not_run and 'decode_head' in t_not_run

    pairs = {(s.name, t.name): s.stride for s, t in suggest_pairs(student, teacher)}
    assert pairs[('backbone.layer4', 'backbone.layer4')] == 8.0
    assert pairs[('decode_head.sep_bottleneck', 'decode_head.sep_bottleneck')] == 4.0
    assert not any('auxiliary_head' in t for _, t in pairs)  # the teacher never runs it


def test_validate_taps_reports_every_problem_at_once(seg_cfg):
    cfg = copy.deepcopy(seg_cfg)
    cfg['validate_taps'] = SIZES['seg']
    cfg['distill'] = [
        dict(student='decode_head.sep_bottleneck', teacher='decode_head.sep_bottleneck', losses=[
            dict(type='TaTLoss', student_channels=64, teacher_channels=512),  # student has 128
            dict(type='PatchGroupTaTLoss', student_channels=128, teacher_channels=512,
                 patch_size=32, group_size=1),  # the map is 16x16
        ]),
        dict(student='backbone.layer1', teacher='backbone.layer4',  # stride 4 vs 8, no resize
             losses=[dict(type='FitNetLoss', student_channels=64, teacher_channels=2048)]),
        dict(student='decode_head.conv_seg', teacher='auxiliary_head.conv_seg',  # not in tensor mode
             losses=[dict(type='KDLoss')]),
    ]
    with pytest.raises(ValueError) as info:
        MODELS.build(cfg)
    message = str(info.value)
    assert 'validate_taps: 4 problem(s)' in message, message
    assert "loss 'tat': student_channels=64 but the student tap gives 128 channels" in message
    assert 'patch_size' in message and "'tat_pg'" in message
    assert 'spatial sizes differ (student 2x64x16x16, teacher 2x2048x8x8; strides 4 and 8)' in message
    assert "teacher tap 'auxiliary_head.conv_seg' recorded nothing" in message


def test_validate_taps_passes_and_changes_no_state(seg_cfg):
    cfg = dict(copy.deepcopy(seg_cfg), validate_taps=False)
    distiller = MODELS.build(cfg)
    distiller.train()
    before = {k: v.clone() for k, v in distiller.state_dict().items()}
    assert check_distill_taps(distiller, SIZES['seg']) == []
    assert distiller.training and distiller.student.training and not distiller.teacher.training
    after = distiller.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    MODELS.build(dict(cfg, validate_taps=True))  # the student preprocessor's size: fits too


def test_input_size_from_config():
    cfg = Config.fromfile(osp.join(REPO, 'configs/seg/deeplabv3plus_r101_to_r18_voc_tat.py'))
    assert input_size_from_config(cfg, 'mmseg')[0] == (512, 512)
    cfg = Config(dict(model=dict(type='X'), train_pipeline=[
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=(1333, 800), keep_ratio=True)]))
    assert input_size_from_config(cfg, 'mmdet') == ((800, 1333), 'Resize(scale=(1333, 800)) in the '
                                                    'train pipeline')


def test_tool_lists_pairs_and_checks_entries(tmp_path):
    """The real command on a cls config whose teacher checkpoint does not exist: it lists both
    models, suggests the layer4 pair, and reports the wrong channel count (exit code 1)."""
    model = cls_distiller(tmp_path)
    model['teacher']['checkpoint'] = str(tmp_path / 'not_trained_yet.pth')
    model['distill'][0]['losses'] = [dict(type='TaTLoss', student_channels=512, teacher_channels=1024)]
    cfg_path = tmp_path / 'cls_tat.py'
    Config(dict(model=model, default_scope='mmpretrain',
                custom_imports=dict(imports=['tat_mm'], allow_failed_imports=False))).dump(str(cfg_path))
    out = subprocess.run([sys.executable, osp.join(REPO, 'tools/inspect_taps.py'), str(cfg_path),
                          '--shape', '64', '64'], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert out.returncode == 1, out.stdout + out.stderr
    text = out.stdout
    assert 'Student: ImageClassifier, loss mode, input 64x64' in text
    assert 'Teacher: ImageClassifier, tensor mode' in text
    assert "dict(student='backbone.layer4', teacher='backbone.layer4', losses=[dict(type='TaTLoss', " \
           'student_channels=512, teacher_channels=2048)])' in text
    assert 'teacher_channels=1024 but the teacher tap gives 2048 channels' in text
    assert 'head.fc ' in text and f'2x{NUM_CLASSES}' in text


def test_build_config_models_plain_model():
    """A plain (non-distiller) config: one model, nothing loaded."""
    model = offline_model_config(SEG_STUDENT, NUM_CLASSES, SIZES['seg'])
    models = build_config_models(Config(dict(model=model, default_scope='mmseg')))
    assert models['teacher'] is None and type(models['student']).__name__ == 'EncoderDecoder'
    candidates, _, error, *_ = inspect_model(models['student'], 'mmseg', (64, 64), 'loss')
    assert error is None and any(c.name == 'decode_head.conv_seg' for c in candidates)


@pytest.mark.parametrize('correct', [True, False])
def test_validate_taps_on_a_cls_distiller(tmp_path, correct):
    """validate_taps=True used to crash every ClsDistiller (`no attribute '_pass_gt_label'`)."""
    from mmpretrain.registry import MODELS as CLS_MODELS
    cfg = dict(cls_distiller(tmp_path), validate_taps=SIZES['cls'])
    cfg['distill'].append(dict(student='head.fc', teacher='head.fc', losses=[
        dict(type='DKDLoss', name='dkd')]))  # takes gt_label
    if not correct:
        cfg['distill'][0]['losses'][0]['student_channels'] = 256  # the student gives 512
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        if correct:
            distiller = CLS_MODELS.build(cfg)
            assert distiller._pass_gt_label
        else:
            with pytest.raises(ValueError, match="student_channels=256 but the student tap gives 512"):
                CLS_MODELS.build(cfg)


def test_input_size_from_the_train_dataloader():
    """The runner trains with the dataloader's pipeline: a config that overrides it (96 px) but
    keeps its base's train_pipeline variable (512 px) is inspected at 96 px."""
    base_pipeline = [dict(type='RandomCrop', crop_size=(512, 512))]
    user_pipeline = [dict(type='RandomResize', scale=(2048, 512)), dict(type='RandomCrop',
                                                                     crop_size=(96, 96))]
    cfg = Config(dict(model=dict(type='X'), train_pipeline=base_pipeline,
                      train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=dict(
                          type='ADE20KDataset', pipeline=user_pipeline)))))
    assert input_size_from_config(cfg, 'mmseg') == (
        (96, 96), "RandomCrop(crop_size=(96, 96)) in the train dataloader's pipeline")
    cfg.train_dataloader.dataset = dict(type='ConcatDataset', datasets=[dict(type='A')])
    assert input_size_from_config(cfg, 'mmseg')[0] == (512, 512)  # no pipeline there: the variable


def test_suggested_pairs_need_distillable_shapes():
    """Synthetic listings: RoI features of different RoI counts are not paired; a DeiT's token
    layer (depth 3) pairs with a CNN map of its stride; a Swin stage's tuple element pairs with a
    CNN tensor through a per-side index; all entries in the distill-entry words."""
    size = (64, 64)

    def cand(path, shape, index=None, module_type='M'):
        return TapCandidate(path, module_type, index, shape, 1, size)

    student = [cand('backbone.layer3', (2, 256, 4, 4)),
               cand('roi_head.bbox_roi_extractor', (8, 256, 7, 7))]
    teacher = [cand('backbone.stages.2', (2, 16, 384), index=0),
               cand('roi_head.bbox_roi_extractor', (100, 256, 7, 7))]
    pairs = suggest_pairs(student, teacher)
    assert [(s.name, t.name) for s, t in pairs] == [('backbone.layer3', 'backbone.stages.2[0]')]
    assert entry_for_pair(*pairs[0]) == (
        "dict(student='backbone.layer3', teacher='backbone.stages.2', index=dict(teacher=0), "
        "tokens=dict(teacher=True), losses=[dict(type='TaTLoss', student_channels=256, "
        'teacher_channels=384)])')
    # DeiT-S (class + 4x4 patch tokens at 64 px) -> a MobileViT-like map at stride 16: the last
    # transformer layer (3 parts deep), not the patch embedding (2 parts, but the first to return).
    deit = [cand('backbone.patch_embed', (2, 16, 384), index=0), cand('backbone.layers.11', (2, 17, 384)),
            cand('backbone', (2, 384), index=0)]
    mobilevit = [cand('backbone.layers.3', (2, 96, 4, 4)), cand('backbone.layers.4', (2, 640, 2, 2))]
    (s, t), = suggest_pairs(mobilevit, deit)
    assert (s.name, t.name, s.stride, t.stride) == ('backbone.layers.3', 'backbone.layers.11', 16, 16)
    assert 'tokens=dict(teacher=True)' in entry_for_pair(s, t) and 'FeatureTap' not in entry_for_pair(s, t)
    # mmengine's SyncBN (a subclass of torch's, as the upstream configs build it) repeats its
    # input like every norm: never listed or suggested.
    from mmengine.registry import MODELS as ROOT_MODELS
    from tat_mm.distill.tap_inspection import _repeats_input
    assert _repeats_input(ROOT_MODELS.build(dict(type='SyncBN', num_features=4)))
    # Same stride, different grids (padding): a resize suggestion.
    a, b = cand('neck', (2, 256, 8, 8), index=0), cand('neck', (2, 256, 8, 9), index=0)
    assert entry_for_pair(a, b).startswith("dict(student='neck', teacher='neck', index=0, resize=True")


def test_detr_and_instance_segmentation_students():
    """DINO (mmdet): the inspector's loss pass runs in train mode, as training does (in eval mode
    DINOHead.loss() lacks its denoising inputs), and `tokens` on its encoder / decoder is a
    build-time error naming what to tap. Mask R-CNN (R18): the fake batch has masks."""
    from mmdet.registry import MODELS as DET_MODELS
    from distill_cases import R18_FPN
    from tat_mm.distill import FeatureTap
    from tat_mm.distill.offline_init import init_weights_offline
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        dino_cfg = offline_model_config('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', NUM_CLASSES)
        dino_cfg['num_queries'] = 100  # top-k queries of the 128 memory tokens of a 64x96 image
        # Initialised as the runner does: until init_weights() DINO's level_embed is whatever
        # memory it got (torch.Tensor(...)), and CI once met a NaN Hungarian cost from it.
        dino = init_weights_offline(DET_MODELS.build(dino_cfg))
        mask_rcnn_cfg = offline_model_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
                                             NUM_CLASSES)
        mask_rcnn_cfg.merge(R18_FPN)
        mask_rcnn = DET_MODELS.build(mask_rcnn_cfg)
        dino.eval()  # the inspection puts it back in eval mode afterwards
        before = {k: v.clone() for k, v in dino.state_dict().items()}
        result = inspect_model(dino, 'mmdet', SIZES['det'], 'loss')
        mask_result = inspect_model(mask_rcnn, 'mmdet', SIZES['det'], 'loss')
    assert result.error is None and not dino.training
    assert any(c.name.startswith('encoder.layers.5') for c in result.candidates)
    assert all(torch.equal(v, before[k]) for k, v in dino.state_dict().items())  # BN restored
    with pytest.raises(ValueError, match=r"(?s)teacher tap 'encoder.layers.5': the DINO encoder's "
                                         r'tokens .*no single grid.*'
                                         r"dict\(student='neck', teacher='neck', index=k\)"):
        FeatureTap(dino, 'encoder.layers.5', model_name='teacher', tokens={})
    with pytest.raises(ValueError, match=r'decoder.*object queries.*no grid'):
        FeatureTap(dino, 'decoder', model_name='teacher', tokens={})
    # tokens=dict(level=k) folds one level of the memory, with the encoder's spatial_shapes.
    tap = FeatureTap(dino, 'encoder', model_name='teacher', tokens=dict(level=1))
    memory = []
    handle = dino.encoder.register_forward_hook(lambda m, a, out: memory.append(out))
    inputs, samples = fake_inputs(dino, 'mmdet', SIZES['det'])
    with torch.no_grad(), DefaultScope.overwrite_default_scope('mmdet'):
        dino(inputs, samples, mode='tensor')
    handle.remove()
    tap.remove()
    levels = tap.to_map._level_shapes
    assert levels[:2] == [(8, 12), (4, 6)]  # strides 8 and 16 of the 64x96 input
    level1 = tap.value
    assert level1.shape == (2, 256, 4, 6) and memory[0].shape[1] == sum(h * w for h, w in levels)
    for i in range(4):
        for j in range(6):
            assert torch.equal(level1[:, :, i, j], memory[0][:, 8 * 12 + i * 6 + j])
    assert mask_result.error is None
    assert any(c.name.startswith('roi_head.mask_head') for c in mask_result.candidates)
