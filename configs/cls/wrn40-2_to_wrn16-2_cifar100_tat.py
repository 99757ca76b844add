# TaT: WRN-40-2 -> WRN-16-2 on CIFAR-100, without KD (TaT, Lin et al., CVPR 2022, Table 1).
# Paper: 76.06 top-1. Ours: not measured.
# TaT (Eq. 7) on the last stage (layer3, 128 channels), gamma / phi = conv3x3 + BN, theta = identity
# (best in the paper's Table 6); loss CE + 1.0 * TaT: the CIFAR loss weights are not in METHODS.md
# nor in the authors' public code, so the weight is ours and untuned.
# Train the teacher first (no OpenMMLab checkpoint exists):
#   python tools/train.py configs/cls/wrn40-2_cifar100_teacher.py
#   python tools/train.py configs/cls/wrn40-2_to_wrn16-2_cifar100_tat.py
_base_ = './wrn16-2_cifar100_student.py'
custom_imports = dict(
    imports=['tat_mm', 'tat_mm.models.cifar_backbones'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ClsDistiller',
    student={{_base_.model}},
    teacher=dict(
        config='{{fileDirname}}/wrn40-2_cifar100_teacher.py',
        checkpoint='work_dirs/wrn40-2_cifar100_teacher/epoch_240.pth'),
    distill=[
        dict(student='backbone.layer3', teacher='backbone.layer3',
             losses=[
                 dict(type='TaTLoss', student_channels=128, teacher_channels=128,
                      query_embed='conv3x3', key_embed='identity', value_embed='conv3x3',
                      loss_weight=1.0),
             ]),
    ])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
