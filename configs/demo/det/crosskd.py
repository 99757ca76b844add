# Demo CrossKD (detection): teacher.py -> student_head128.py with CrossKD's cross-head distillation: the
# student's head features after the first of its 2 convs per branch run through the teacher's
# second conv and output layers, distilled to the teacher's predictions (KDQualityFocalLoss +
# GIoU, the paper's RetinaNet losses, untuned here).
# CrossKD feeds the student's head features into the teacher's head, so the student's head convs
# are as wide as the teacher's (128): the student is student_head128.py (the other demo students'
# heads are 64 wide; the FPN is 64 wide in all), which is also its baseline.
#   python tools/train.py configs/demo/det/crosskd.py   (after the teacher)
_base_ = './student_head128.py'

teacher_checkpoint = 'work_dirs/demo/det/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='DetDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[],
    cross_head=dict(
        reused_teacher_head_idx=1,
        loss_cls_kd=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0),
        loss_reg_kd=dict(type='GIoULoss', loss_weight=1.0)))
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it).
custom_hooks = [
    dict(type='DemoTeacherCheckHook', min_iters=400),
    # teacher scored on val, gradient shares, warnings (docs/distill_health.md)
    dict(type='DistillHealthHook'),
]
