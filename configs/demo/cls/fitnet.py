# Demo FitNet baseline (classification): 1x1 conv + BN connector and MSE on backbone.layer4, same
# tap and weight as tat.py.
#   python tools/train.py configs/demo/cls/fitnet.py
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/cls/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='ClsDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='backbone.layer4', teacher='backbone.layer4',
             losses=[dict(type='FitNetLoss', student_channels=64, teacher_channels=256,
                          loss_weight=0.2)]),
    ])
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it).
custom_hooks = [
    dict(type='DemoTeacherCheckHook', min_iters=300),
    # teacher scored on val, gradient shares, warnings (docs/distill_health.md)
    dict(type='DistillHealthHook'),
]
