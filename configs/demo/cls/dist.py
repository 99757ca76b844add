# Demo DIST baseline (classification): DIST's inter- and intra-class Pearson relations of the
# softened predictions (Huang et al., NeurIPS 2022) on the classifier layer (head.fc), the CIFAR
# setting (tau 4, beta = gamma = 1, weight 2: cls/resnet32x4_to_resnet8x4_cifar100_dist.py) next
# to the full cross-entropy (not tuned here).
#   python tools/train.py configs/demo/cls/dist.py   (after the teacher: tools/demo.py trains it)
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/cls/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='ClsDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='head.fc', teacher='head.fc',
             losses=[dict(type='DISTLoss', beta=1.0, gamma=1.0, tau=4.0, loss_weight=2.0)]),
    ])
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it).
custom_hooks = [
    dict(type='DemoTeacherCheckHook', min_iters=300),
    # teacher scored on val, gradient shares, warnings (docs/distill_health.md)
    dict(type='DistillHealthHook'),
]
