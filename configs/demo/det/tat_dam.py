# Demo TaT + DAM (detection): the TaT of tat.py confined to the areas SoKD's DAM finds (10 classes,
# top-4 areas, trained with the ground-truth boxes through its CenterNet loss); DAM untuned.
#   python tools/train.py configs/demo/det/tat_dam.py
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/det/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='DetDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    dam_gt_supervision=True,
    distill=[
        dict(student='neck', teacher='neck', index=[0, 1],
             losses=[dict(type='DAMDistillLoss', student_channels=64, teacher_channels=128,
                          feature_loss=dict(type='TaTLoss', loss_weight=1.0),
                          dam=dict(num_classes=10, feat_channels=64, init_size=3.0), topk=4)]),
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
