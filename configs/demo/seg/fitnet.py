# Demo FitNet baseline (segmentation): 1x1 conv + BN connector and MSE on
# decode_head.sep_bottleneck, same tap and total weight as tat.py (0.15).
#   python tools/train.py configs/demo/seg/fitnet.py
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/seg/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='SegDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='decode_head.sep_bottleneck', teacher='decode_head.sep_bottleneck',
             losses=[dict(type='FitNetLoss', student_channels=64, teacher_channels=128,
                          loss_weight=0.15)]),
    ])
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it).
custom_hooks = [
    dict(type='DemoTeacherCheckHook', min_iters=600),
    # teacher scored on val, gradient shares, warnings (docs/distill_health.md)
    dict(type='DistillHealthHook'),
]
