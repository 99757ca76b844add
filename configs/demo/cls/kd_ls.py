# Demo KD + logit standardization (classification): Hinton KD on z-scored logits (Sun et al.,
# CVPR 2024) on the classifier layer (head.fc), the authors' CIFAR setting (base temperature 2,
# KD weight 9; configs/cls/resnet32x4_to_resnet8x4_cifar100_kd_ls.py) next to the full
# cross-entropy (not tuned here).
#   python tools/train.py configs/demo/cls/kd_ls.py   (after the teacher: tools/demo.py trains it)
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/cls/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='ClsDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='head.fc', teacher='head.fc',
             losses=[dict(type='KDLoss', temperature=2.0, loss_weight=9.0,
                          logit_standardization=True)]),
    ])
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it).
custom_hooks = [
    dict(type='DemoTeacherCheckHook', min_iters=300),
    # teacher scored on val, gradient shares, warnings (docs/distill_health.md)
    dict(type='DistillHealthHook'),
]
