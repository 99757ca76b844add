# Demo TaT (detection): teacher.py -> student.py, TaT (Eq. 7, gamma / phi conv3x3 + BN, theta
# identity) on the FPN's P3 (12x12) and P4 (6x6), weight 1.0 per level as in the repository's
# RetinaNet config for the small levels (not tuned here).
#   python tools/train.py configs/demo/det/tat.py   (after the teacher; tools/demo.py does both)
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/det/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='DetDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='neck', teacher='neck', index=[0, 1],
             losses=[dict(type='TaTLoss', student_channels=64, teacher_channels=128,
                          loss_weight=1.0)]),
    ])
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it);
custom_hooks = [
    dict(type='DemoTeacherCheckHook', min_iters=400),
    # teacher scored on val, gradient shares, warnings (docs/distill_health.md)
    dict(type='DistillHealthHook'),
    # TaT attention of fixed val pixels / DAM's areas, every 100 iterations, through the
    # visualizer (PNGs in <work_dir>/<timestamp>/vis_data/vis_image/, or TensorBoard / W&B).
    dict(type='DistillVisualizationHook', interval=100, num_images=2),
]
