"""Distiller configs built from the real upstream configs, shared by the distiller tests.

Teachers are R50 models of each library (made offline and given a generated checkpoint), students
R18 models; the configs are what a user writes, minus the download URLs.
"""
import copy

from tat_mm.testing import offline_model_config, save_random_checkpoint

NUM_CLASSES = 5

SEG_STUDENT = 'mmseg::deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py'
SEG_TEACHER = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-40k_cityscapes-512x1024.py'
CLS_STUDENT = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'
CLS_TEACHER = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
FRCNN_TEACHER = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
RETINA_TEACHER = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
R18_FPN = dict(backbone=dict(depth=18, init_cfg=None), neck=dict(in_channels=[64, 128, 256, 512]))

SIZES = {'cls': (64, 64), 'seg': (64, 64), 'det': (64, 96)}  # cls: layer4 is 2x2


def save_checkpoint(scope: str, model_cfg: dict, path) -> str:
    """A random-weight teacher checkpoint with calibrated BN statistics."""
    return save_random_checkpoint(scope, model_cfg, path, seed=1, calibrate_bn=True)


def seg_teacher(tmp_path):
    """Teacher given as an ``mmseg::`` path plus ``cfg_options``, as users do."""
    options = dict(decode_head=dict(num_classes=NUM_CLASSES), auxiliary_head=dict(num_classes=NUM_CLASSES))
    cfg = offline_model_config(SEG_TEACHER)
    cfg.merge(options)
    return dict(config=SEG_TEACHER, cfg_options=options,
                checkpoint=save_checkpoint('mmseg', cfg, tmp_path / 'seg_teacher.pth'))


def seg_distiller(tmp_path, losses=None):
    student = offline_model_config(SEG_STUDENT, NUM_CLASSES, SIZES['seg'])
    losses = losses or [
        dict(type='TaTLoss', student_channels=128, teacher_channels=512, loss_weight=0.1),
        dict(type='PatchGroupTaTLoss', student_channels=128, teacher_channels=512, patch_size=4,
             group_size=4, loss_weight=0.1),
        dict(type='AnchorPointTaTLoss', student_channels=128, teacher_channels=512, pool_size=2,
             loss_weight=0.05),
        dict(type='DAMDistillLoss', student_channels=128, teacher_channels=512, topk=4,
             feature_loss=dict(type='FitNetLoss'), dam=dict(num_classes=NUM_CLASSES)),
    ]
    return dict(
        type='SegDistiller', student=student, teacher=seg_teacher(tmp_path),
        distill=[
            dict(student='decode_head.sep_bottleneck', teacher='decode_head.sep_bottleneck',
                 losses=losses),
            # pixel-wise KD on the classifier output
            dict(student='decode_head.conv_seg', teacher='decode_head.conv_seg',
                 losses=[dict(type='KDLoss', temperature=2.0, loss_weight=0.5)]),
        ])


def cls_distiller(tmp_path):
    teacher = offline_model_config(CLS_TEACHER, NUM_CLASSES)
    return dict(
        type='ClsDistiller',
        student=offline_model_config(CLS_STUDENT, NUM_CLASSES),
        teacher=dict(config=teacher,
                     checkpoint=save_checkpoint('mmpretrain', teacher, tmp_path / 'cls_teacher.pth')),
        distill=[
            dict(student='backbone.layer4', teacher='backbone.layer4',
                 losses=[dict(type='TaTLoss', student_channels=512, teacher_channels=2048,
                              loss_weight=0.2),
                         dict(type='DAMDistillLoss', student_channels=512, teacher_channels=2048,
                              topk=2, feature_loss=dict(type='TaTLoss'),
                              dam=dict(num_classes=NUM_CLASSES))]),
            dict(student='head.fc', teacher='head.fc', losses=[dict(type='KDLoss', temperature=1.0)]),
        ])


def det_distiller(tmp_path, kind='faster_rcnn'):
    teacher_path = FRCNN_TEACHER if kind == 'faster_rcnn' else RETINA_TEACHER
    teacher = offline_model_config(teacher_path, NUM_CLASSES)
    student = offline_model_config(teacher_path, NUM_CLASSES)
    student.merge(R18_FPN)
    return dict(
        type='DetDistiller', student=student,
        teacher=dict(config=teacher,
                     checkpoint=save_checkpoint('mmdet', teacher, tmp_path / f'{kind}_teacher.pth')),
        distill=[
            dict(student='neck', teacher='neck', index=[0, 1],
                 losses=[dict(type='PatchGroupTaTLoss', student_channels=256, teacher_channels=256,
                              patch_size=4, group_size=2, loss_weight=0.1),
                         dict(type='AnchorPointTaTLoss', student_channels=256, teacher_channels=256,
                              pool_size=2, loss_weight=0.05)]),
            dict(student='neck', teacher='neck', index=[2, 3, 4],
                 losses=[dict(type='TaTLoss', student_channels=256, teacher_channels=256,
                              query_embed='conv1x1', value_embed='conv1x1', loss_weight=0.1),
                         dict(type='DAMDistillLoss', student_channels=256, teacher_channels=256,
                              topk=2, feature_loss=dict(type='FitNetLoss'),
                              dam=dict(num_classes=NUM_CLASSES))]),
        ])


def cls_runner_config(tmp_path, work_dir, max_iters=4, batch_size=4, teacher_ckpt=None):
    """A full MMEngine runner config: ResNet-18 -> ResNet-18 TaT + KD on the built-in digits.

    Both nets keep BN in eval mode (``norm_eval``) and the losses have no BN, so a step depends on
    each image alone: distributed and single-process runs must then agree to float precision.
    """
    model = offline_model_config(CLS_STUDENT, 10)
    model.merge(dict(backbone=dict(norm_eval=True)))
    # As in mmpretrain configs: a top-level data_preprocessor without `type`, which the runner
    # hands to the model (the distiller must give it to the student).
    data_preprocessor = dict(model.pop('data_preprocessor'))
    data_preprocessor.pop('type', None)
    if teacher_ckpt is None:
        teacher_ckpt = save_checkpoint('mmpretrain', offline_model_config(CLS_STUDENT, 10),
                                       tmp_path / 'r18_teacher.pth')
    dataset = dict(type='DigitsClassificationDataset', image_size=32,
                   pipeline=[dict(type='PackInputs')])
    return dict(
        default_scope='mmpretrain',
        custom_imports=dict(imports=['tat_mm'], allow_failed_imports=False),
        work_dir=str(work_dir),
        data_preprocessor=data_preprocessor,
        model=dict(
            type='ClsDistiller', student=model,
            teacher=dict(config=offline_model_config(CLS_STUDENT, 10), checkpoint=teacher_ckpt),
            distill=[
                dict(student='backbone.layer4', teacher='backbone.layer4',
                     losses=[dict(type='TaTLoss', student_channels=512, teacher_channels=512,
                                  query_embed='identity', key_embed='identity',
                                  value_embed='identity', loss_weight=0.5)]),
                dict(student='head.fc', teacher='head.fc', losses=[dict(type='KDLoss')]),
            ]),
        train_dataloader=dict(
            batch_size=batch_size, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(dataset, split='train')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=10**6),
        test_dataloader=dict(batch_size=32, num_workers=0,
                             sampler=dict(type='DefaultSampler', shuffle=False),
                             dataset=dict(dataset, split='val')),
        test_evaluator=dict(type='Accuracy', topk=(1, )),
        test_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4)),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0),
        log_level='WARNING',
    )


CROSSKD_HEADS = {
    'retinanet': 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    'gfl': 'mmdet::gfl/gfl_r50_fpn_1x_coco.py',
    'atss': 'mmdet::atss/atss_r50_fpn_1x_coco.py',
    'fcos': 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
}


def crosskd_distiller(tmp_path, head='gfl', cut=1, cross_head=None, student_overrides=None):
    """CrossKD (``cross_head``) between two small dense detectors of mmdet's ``head`` config:
    R18 backbones (the student half as wide), 64-wide FPN and heads with 2 convs per branch."""
    small = dict(backbone=dict(depth=18, init_cfg=None),
                 neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
                 bbox_head=dict(in_channels=64, feat_channels=64, stacked_convs=2))
    teacher = offline_model_config(CROSSKD_HEADS[head], NUM_CLASSES, SIZES['det'])
    teacher.merge(small)
    student = copy.deepcopy(teacher)
    student.merge(dict(backbone=dict(base_channels=32), neck=dict(in_channels=[32, 64, 128, 256])))
    if student_overrides:
        student.merge(student_overrides)
    ckpt = save_random_checkpoint('mmdet', teacher, tmp_path / f'{head}_teacher.pth', seed=1)
    return dict(type='DetDistiller', student=student, teacher=dict(config=teacher, checkpoint=ckpt),
                distill=[], cross_head=dict(reused_teacher_head_idx=cut, **(cross_head or {})))
