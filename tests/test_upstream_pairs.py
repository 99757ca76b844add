"""Upstream model pairs the rest of the suite does not use, each trained one real step.

Student and teacher are the OpenMMLab libraries' own configs (made offline: no downloads, BN for
SyncBN, a random teacher checkpoint), on tiny fake batches. Pairs of issue 12 covered elsewhere:
ATSS <- FCOS-caffe (tests/test_teacher_preprocessing.py), DeiT-tiny <- ViT-B
(tests/test_token_taps.py, the shipped config), DeepLabV3+ MobileNetV2 (tests/test_configs.py).
"""
import importlib

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope

import tat_mm  # noqa: F401
from tat_mm.testing import fake_batch, offline_model_config, save_random_checkpoint

NUM_CLASSES = 5


def fitnet(s_channels, t_channels):
    return [dict(type='FitNetLoss', student_channels=s_channels, teacher_channels=t_channels)]


# id: (scope, task, student config, student overrides, teacher config (or (config, overrides)),
#      distill entries, (H, W))
PAIRS = {
    'segformer-b0<-b1': (
        'mmseg', 'seg', 'mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py', None,
        'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py',
        [dict(student='decode_head.fusion_conv', teacher='decode_head.fusion_conv',
              losses=[dict(type='TaTLoss', student_channels=256, teacher_channels=256)])],
        (64, 64)),
    'pspnet-r18<-r50': (
        'mmseg', 'seg', 'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py', None,
        'mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py',
        # mmseg's PSPNet-R18 config narrows the head to 128 channels; R50's is 512.
        [dict(student='decode_head.bottleneck', teacher='decode_head.bottleneck',
              losses=fitnet(128, 512)),
         dict(student='decode_head.conv_seg', teacher='decode_head.conv_seg',
              losses=[dict(type='KDLoss', temperature=2.0)])],
        (64, 64)),
    'hrnet-18s<-18': (
        'mmseg', 'seg', 'mmseg::hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py', None,
        'mmseg::hrnet/fcn_hr18_4xb2-40k_cityscapes-512x1024.py',
        [dict(student='backbone', teacher='backbone', index=0, losses=fitnet(18, 18)),
         dict(student='backbone', teacher='backbone', index=3, losses=fitnet(144, 144))],
        (64, 64)),
    'mobilenetv2<-r50': (
        'mmpretrain', 'cls', 'mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py', None,
        'mmpretrain::resnet/resnet50_8xb32_in1k.py',
        [dict(student='backbone.conv2', teacher='backbone.layer4',
              losses=[dict(type='TaTLoss', student_channels=1280, teacher_channels=2048)]),
         dict(student='head.fc', teacher='head.fc', losses=[dict(type='KDLoss')])],
        (64, 64)),
    'r18<-convnext-t': (
        'mmpretrain', 'cls', 'mmpretrain::resnet/resnet18_8xb32_in1k.py', None,
        'mmpretrain::convnext/convnext-tiny_32xb128_in1k.py',
        [dict(student='backbone.layer4', teacher='backbone.stages.3',
              losses=[dict(type='TaTLoss', student_channels=512, teacher_channels=768)])],
        (64, 64)),
    'mask-rcnn-r18<-r50': (
        'mmdet', 'det', 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
        dict(backbone=dict(depth=18), neck=dict(in_channels=[64, 128, 256, 512])),
        'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
        [dict(student='neck', teacher='neck', index=[0, 1], losses=fitnet(256, 256))],
        (64, 96)),
    'yolox-tiny<-s': (
        'mmdet', 'det', 'mmdet::yolox/yolox_tiny_8xb8-300e_coco.py', None,
        'mmdet::yolox/yolox_s_8xb8-300e_coco.py',
        [dict(student='neck', teacher='neck', index=[0, 1, 2], losses=fitnet(96, 128))],
        (64, 96)),
    # DETR family: DINO-4scale R18 <- R50, the neck's stride-8 and -16 maps and one level of
    # the encoder memory (tokens=dict(level=1): folded with the encoder's spatial shapes); 100
    # queries (top-k of the 128 memory tokens of a 64x96 image).
    'dino-r18<-r50': (
        'mmdet', 'det', 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
        dict(num_queries=100, backbone=dict(depth=18), neck=dict(in_channels=[128, 256, 512])),
        ('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', dict(num_queries=100)),
        [dict(student='neck', teacher='neck', index=[0, 1], losses=fitnet(256, 256)),
         dict(student='encoder', teacher='encoder', tokens=dict(level=1),
              losses=[dict(type='TaTLoss', student_channels=256, teacher_channels=256)])],
        (64, 96)),
    # One-stage GFL from a deeper teacher, the shipped det recipe: hierarchical TaT inside DAM on
    # P3 (8x12 at 64x96), with a softer attention (temperature, not the paper's 1).
    'gfl-r50<-r101': (
        'mmdet', 'det', 'mmdet::gfl/gfl_r50_fpn_1x_coco.py', None,
        'mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
        [dict(student='neck', teacher='neck', index=0, losses=[
            dict(type='DAMDistillLoss', student_channels=256, teacher_channels=256, topk=4,
                 dam=dict(num_classes=NUM_CLASSES),
                 feature_loss=dict(type='HierarchicalTaTLoss', patch_size=4, group_size=2,
                                   pool_size=2, temperature=4.0))])],
        (64, 96)),
    # Another family and width: Fast-SCNN student, DeepLabV3-R50 teacher; hierarchical TaT between
    # their heads' last features (128 vs 512 channels, both 8x8 at 64x64).
    'fast-scnn<-deeplabv3-r50': (
        'mmseg', 'seg', 'mmseg::fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py', None,
        'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py',
        [dict(student='decode_head.convs', teacher='decode_head.bottleneck', losses=[
            dict(type='HierarchicalTaTLoss', student_channels=128, teacher_channels=512,
                 patches_per_side=2, group_size=2, pool_size=2, patch_weight=0.1,
                 anchor_weight=0.05)])],
        (64, 64)),
}


def model_config(config: str, scope: str, size, overrides=None) -> dict:
    cfg = offline_model_config(config, NUM_CLASSES, size)
    if overrides:
        cfg.merge(overrides)
    preprocessor = cfg.get('data_preprocessor') or {}
    preprocessor.pop('batch_augments', None)  # YOLOX's multi-scale resizing: not on 64x96 batches
    return cfg


@pytest.mark.parametrize('pair', sorted(PAIRS))
def test_upstream_pair_trains_a_step(pair, tmp_path):
    scope, task, student, overrides, teacher, distill, size = PAIRS[pair]
    teacher, teacher_overrides = teacher if isinstance(teacher, tuple) else (teacher, None)
    student_cfg = model_config(student, scope, size, overrides)
    teacher_cfg = model_config(teacher, scope, size, teacher_overrides)
    if task == 'det':  # mask heads need gt masks; the pairs distil the neck
        for cfg in (student_cfg, teacher_cfg):
            cfg.get('roi_head', {}).pop('mask_head', None)
            cfg.get('roi_head', {}).pop('mask_roi_extractor', None)
    distiller = dict(
        type={'seg': 'SegDistiller', 'cls': 'ClsDistiller', 'det': 'DetDistiller'}[task],
        student=student_cfg,
        teacher=dict(config=teacher_cfg, checkpoint=save_random_checkpoint(
            scope, teacher_cfg, tmp_path / 'teacher.pth', init_weights=True)),
        distill=distill)
    torch.manual_seed(0)  # the student's weights too: not whatever the worker's last test left
    with DefaultScope.overwrite_default_scope(scope):
        model = importlib.import_module(f'{scope}.registry').MODELS.build(distiller)
    model.init_weights()  # as the runner does (offline configs: nothing to download)
    model.train()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    log_vars = model.train_step(fake_batch(task, 2, size, NUM_CLASSES), optim_wrapper)
    distill_keys = [k for k in log_vars if k.startswith('loss_') and '.' in k]
    # every pair logs; HierarchicalTaTLoss logs two terms (loss_tat_pg / loss_tat_ap) and
    # DAMDistillLoss adds DAM's own loss (loss_dam)
    for pair_mod in model.pairs:
        assert any(f'.{pair_mod.student_tap}' in k for k in distill_keys), sorted(log_vars)
    extra = repr(distill).count('HierarchicalTaTLoss') + repr(distill).count('DAMDistillLoss')
    assert len(distill_keys) == len(model.pairs) + extra, sorted(log_vars)
    for key, value in log_vars.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), f'{pair}: {key} = {value}'
