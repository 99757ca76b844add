# ResNet-32x4 on CIFAR-100: the teacher of resnet32x4_to_resnet8x4_cifar100_tat.py (TaT Table 1). No
# OpenMMLab checkpoint exists: train it with this config; the distillation config loads
# work_dirs/resnet32x4_cifar100_teacher/epoch_240.pth.
# Paper: no number in METHODS.md. Ours: not measured.
# Network: tat_mm/models/cifar_backbones (CRD definition); schedule: _base_/cifar100_crd.py
# (240 epochs, batch 64 on one GPU).
#   python tools/train.py configs/cls/resnet32x4_cifar100_teacher.py
_base_ = ['./_base_/cifar100_crd.py']
custom_imports = dict(
    imports=['tat_mm', 'tat_mm.models.cifar_backbones'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='CIFARResNet', depth=32, channels=(32, 64, 128, 256)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=256,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
