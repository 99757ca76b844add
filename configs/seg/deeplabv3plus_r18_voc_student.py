# DeepLabV3+ ResNet-18 alone on Pascal VOC 2012 + SBD aug: the student baseline of the TaT runs,
# on their schedule (every deeplabv3plus_r101_to_r18_voc_*.py config inherits this file).
# Paper: 72.07 mIoU. Ours: not measured.
# Schedule of the authors' scripts (METHODS.md section 2): SGD Nesterov momentum 0.9, lr 0.007,
# wd 5e-4, cosine per iteration, 100 epochs at batch 16 (4 GPUs x 4), 10x lr on the heads.
# Model as in mmseg (512 crop, output stride 8, auxiliary FCN head), not the authors' 513 / 16.
#   python tools/train.py configs/seg/deeplabv3plus_r18_voc_student.py
#   bash tools/dist_train.sh configs/seg/deeplabv3plus_r18_voc_student.py 4
_base_ = [
    'mmseg::_base_/models/deeplabv3plus_r50-d8.py', 'mmseg::_base_/datasets/pascal_voc12_aug.py',
    'mmseg::_base_/default_runtime.py'
]
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained='open-mmlab://resnet18_v1c',
    backbone=dict(depth=18),
    # mmseg's ResNet-18 DeepLabV3+ widths: the decoder (decode_head.sep_bottleneck) is 128 wide.
    decode_head=dict(in_channels=512, c1_in_channels=64, c1_channels=12, channels=128,
                     num_classes=21),
    auxiliary_head=dict(in_channels=256, channels=64, num_classes=21))

train_dataloader = dict(batch_size=4)  # x 4 GPUs = 16
max_iters = 100 * 10582 // 16  # 100 epochs of the 10582 training images
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
