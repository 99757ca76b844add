# Demo TaT (segmentation): teacher.py -> student.py with patch-group TaT (4 patches per side of the
# 24x24 decoder map, groups of 4, delta = 0.1) + anchor-point TaT (4x4 pooling, zeta = 0.05) on
# decode_head.sep_bottleneck, the paper's segmentation weights (not tuned here).
#   python tools/train.py configs/demo/seg/tat.py   (after the teacher; tools/demo.py does both)
# The teacher checkpoint is the one tools/demo.py writes (it overrides the path to its work dir).
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/seg/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='SegDistiller',
    student={{_base_.model}},
    teacher=dict(config='configs/demo/seg/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='decode_head.sep_bottleneck', teacher='decode_head.sep_bottleneck',
             losses=[
                 dict(type='PatchGroupTaTLoss', student_channels=32, teacher_channels=128,
                      patches_per_side=4, group_size=4, loss_weight=0.1),
                 dict(type='AnchorPointTaTLoss', student_channels=32, teacher_channels=128,
                      pool_size=4, loss_weight=0.05),
             ]),
    ])
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it).
custom_hooks = [dict(type='DemoTeacherCheckHook', min_iters=600)]
