# Demo TaT + DAM (classification): the TaT of tat.py confined to the (class-agnostic, top-2) areas
# SoKD's DAM finds on the 4x4 layer4 map; DAM untuned.
#   python tools/train.py configs/demo/cls/tat_dam.py
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/cls/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='ClsDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='backbone.layer4', teacher='backbone.layer4',
             losses=[dict(type='DAMDistillLoss', student_channels=64, teacher_channels=256,
                          feature_loss=dict(type='TaTLoss', query_embed='conv3x3',
                                            key_embed='identity', value_embed='conv3x3',
                                            loss_weight=0.2),
                          dam=dict(num_classes=1, feat_channels=64, init_size=2.0), topk=2)]),
    ])
# Refuse a --quick or under-trained demo teacher (tools/demo.py writes its record beside it);
custom_hooks = [
    dict(type='DemoTeacherCheckHook', min_iters=300),
    # teacher scored on val, gradient shares, warnings (docs/distill_health.md)
    dict(type='DistillHealthHook'),
    # TaT attention of fixed val pixels / DAM's areas, every 100 iterations, through the
    # visualizer (PNGs in <work_dir>/<timestamp>/vis_data/vis_image/, or TensorBoard / W&B).
    dict(type='DistillVisualizationHook', interval=100, num_images=2),
]
