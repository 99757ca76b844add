# Demo KD baseline (classification): Hinton's logit distillation, KL(teacher || student) at
# temperature 4 on the classifier layer (head.fc), weight 1 next to the full cross-entropy -- the
# standard CIFAR setting of the CRD benchmark the TaT paper reports against (not tuned here).
#   python tools/train.py configs/demo/cls/kd.py   (after the teacher; tools/demo.py does both)
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/cls/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='ClsDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='head.fc', teacher='head.fc',
             losses=[dict(type='KDLoss', temperature=4.0, loss_weight=1.0)]),
    ])
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it).
custom_hooks = [
    dict(type='DemoTeacherCheckHook', min_iters=300),
    # teacher scored on val, gradient shares, warnings (docs/distill_health.md)
    dict(type='DistillHealthHook'),
]
