# DeepLabV3+ MobileNetV2 alone on COCO-Stuff 10k: the student baseline of the TaT runs,
# on their schedule (every deeplabv3plus_r101_to_mbv2_cocostuff_*.py config inherits this file).
# Paper: 26.29 mIoU. Ours: not measured.
# Schedule of the authors' scripts (METHODS.md section 2): SGD Nesterov momentum 0.9, lr 0.007,
# wd 5e-4, cosine per iteration, 100 epochs at batch 12 (4 GPUs x 3), 10x lr on the heads.
# Model as in mmseg (512 crop, output stride 8, auxiliary FCN head), not the authors' 513 / 16.
#   python tools/train.py configs/seg/deeplabv3plus_mbv2_cocostuff_student.py
#   bash tools/dist_train.sh configs/seg/deeplabv3plus_mbv2_cocostuff_student.py 4
_base_ = [
    'mmseg::_base_/models/deeplabv3plus_r50-d8.py', 'mmseg::_base_/datasets/coco-stuff10k.py',
    'mmseg::_base_/default_runtime.py'
]
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained='mmcls://mobilenet_v2',
    # mmseg's MobileNetV2 DeepLabV3+ (configs/mobilenet_v2): dilated, output stride 8; the decoder
    # (decode_head.sep_bottleneck) keeps the default 512 width.
    backbone=dict(
        _delete_=True,
        type='MobileNetV2',
        widen_factor=1.,
        strides=(1, 2, 2, 1, 1, 1, 1),
        dilations=(1, 1, 1, 2, 2, 4, 4),
        out_indices=(1, 2, 4, 6),
        norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(in_channels=320, c1_in_channels=24, num_classes=171),
    auxiliary_head=dict(in_channels=96, num_classes=171))

train_dataloader = dict(batch_size=3)  # x 4 GPUs = 12
max_iters = 100 * 9000 // 12  # 100 epochs of the 9000 training images
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.007, momentum=0.9, nesterov=True, weight_decay=5e-4),
    paramwise_cfg=dict(custom_keys={
        'decode_head': dict(lr_mult=10.),
        'auxiliary_head': dict(lr_mult=10.)
    }))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=0., by_epoch=False, begin=0,
         end=max_iters)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters // 10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters // 10))
