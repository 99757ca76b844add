# Demo TaT + DAM (segmentation): the hierarchical TaT of tat.py confined to the areas SoKD's DAM
# finds (class-agnostic, top-8 areas, DAM untuned): the patch-group term with DAM's mask, the
# anchor-point term with the mask pooled like the anchors.
#   python tools/train.py configs/demo/seg/tat_dam.py
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
                 dict(type='DAMDistillLoss', student_channels=64, teacher_channels=128,
                      feature_loss=dict(type='HierarchicalTaTLoss', patches_per_side=4,
                                        group_size=4, pool_size=4, patch_weight=0.1,
                                        anchor_weight=0.05),
                      dam=dict(num_classes=1, feat_channels=32, init_size=4.0), topk=8),
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
