# Demo KD baseline (segmentation): pixel-wise logit distillation, KL(teacher || student) per pixel
# over the 11 classes at temperature 1 on the classifier conv (decode_head.conv_seg), weight 1 next
# to the student's cross-entropy (the pixel-wise KD baseline of the segmentation KD literature; not
# tuned here).
#   python tools/train.py configs/demo/seg/kd.py   (after the teacher; tools/demo.py does both)
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/seg/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='SegDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='decode_head.conv_seg', teacher='decode_head.conv_seg',
             losses=[dict(type='KDLoss', temperature=1.0, loss_weight=1.0)]),
    ])
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it).
custom_hooks = [
    dict(type='DemoTeacherCheckHook', min_iters=600),
    # teacher scored on val, gradient shares, warnings (docs/distill_health.md)
    dict(type='DistillHealthHook'),
]
