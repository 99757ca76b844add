# Demo TaT (segmentation): teacher.py -> student.py with the paper's hierarchical TaT on
# decode_head.sep_bottleneck: patch-group (4 patches per side of the 24x24 decoder map, groups of 4,
# delta = 0.1) + anchor-point (4x4 pooling, zeta = 0.05) sharing one gamma / theta / phi, as the
# authors' segmentation code does; the paper's segmentation weights (not tuned here).
#   python tools/train.py configs/demo/seg/tat.py   (after the teacher; tools/demo.py does both)
# The teacher checkpoint is the one tools/demo.py writes (it overrides the path to its work dir).
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/seg/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='SegDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='decode_head.sep_bottleneck', teacher='decode_head.sep_bottleneck',
             losses=[
                 dict(type='HierarchicalTaTLoss', student_channels=64, teacher_channels=128,
                      patches_per_side=4, group_size=4, pool_size=4, patch_weight=0.1,
                      anchor_weight=0.05),
             ]),
    ])
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it);
custom_hooks = [
    dict(type='DemoTeacherCheckHook', min_iters=600),
    # teacher scored on val, gradient shares, warnings (docs/distill_health.md)
    dict(type='DistillHealthHook'),
    # TaT attention of fixed val pixels / DAM's areas, every 100 iterations, through the
    # visualizer (PNGs in <work_dir>/<timestamp>/vis_data/vis_image/, or TensorBoard / W&B).
    dict(type='DistillVisualizationHook', interval=100, num_images=2),
]
