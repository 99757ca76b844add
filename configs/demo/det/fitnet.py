# Demo FitNet baseline (detection): 1x1 conv + BN connector and MSE on P3 and P4, same taps and
# weight as tat.py.
#   python tools/train.py configs/demo/det/fitnet.py
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/det/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='DetDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='neck', teacher='neck', index=[0, 1],
             losses=[dict(type='FitNetLoss', student_channels=64, teacher_channels=128,
                          loss_weight=1.0)]),
    ])
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it).
custom_hooks = [
    dict(type='DemoTeacherCheckHook', min_iters=400),
    # teacher scored on val, gradient shares, warnings (docs/distill_health.md)
    dict(type='DistillHealthHook'),
]
