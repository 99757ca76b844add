# Demo TaT (classification): teacher.py -> student.py, TaT (Eq. 7) on backbone.layer4 (4x4), the
# authors' ImageNet choice of embeddings (gamma / phi conv3x3 + BN, theta identity) and weight 0.2
# (not tuned here); the student keeps its full cross-entropy, no KD.
#   python tools/train.py configs/demo/cls/tat.py   (after the teacher; tools/demo.py does both)
_base_ = './student.py'

teacher_checkpoint = 'work_dirs/demo/cls/teacher/teacher.pth'
model = dict(
    _delete_=True,
    type='ClsDistiller',
    student={{_base_.model}},
    teacher=dict(config='{{fileDirname}}/teacher.py', checkpoint=teacher_checkpoint),
    distill=[
        dict(student='backbone.layer4', teacher='backbone.layer4',
             losses=[dict(type='TaTLoss', student_channels=64, teacher_channels=256,
                          query_embed='conv3x3', key_embed='identity', value_embed='conv3x3',
                          loss_weight=0.2)]),
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
