# Demo DIST baseline (segmentation): DIST's inter- and intra-class Pearson relations (Huang et
# al., NeurIPS 2022) with every pixel a sample, on the classifier conv (decode_head.conv_seg), the
# authors' segmentation setting (tau 1, beta = gamma = 1, weight 1) next to the student's
# cross-entropy (not tuned here).
#   python tools/train.py configs/demo/seg/dist.py   (after the teacher: tools/demo.py trains it)
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/seg/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='SegDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='decode_head.conv_seg', teacher='decode_head.conv_seg',
             losses=[dict(type='DISTLoss', beta=1.0, gamma=1.0, tau=1.0, loss_weight=1.0)]),
    ])
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it).
custom_hooks = [
    dict(type='DemoTeacherCheckHook', min_iters=600),
    # teacher scored on val, gradient shares, warnings (docs/distill_health.md)
    dict(type='DistillHealthHook'),
]
