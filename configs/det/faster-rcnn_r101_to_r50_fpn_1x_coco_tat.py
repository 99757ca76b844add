# TaT: Faster R-CNN R101-FPN -> R50-FPN on COCO, 1x schedule (tat_mm; the TaT paper
# has no detection results).
# Paper: none. Ours: not measured. Student alone: 37.4 box AP (mmdet zoo).
# TaT on the five FPN levels (P2-P6): patch-group + anchor-point TaT on the two large
# levels, as the authors' segmentation loss (HierarchicalTaTLoss: one shared gamma / theta / phi
# for both terms), full TaT on the three small ones. Loss weights are ours and untuned.
# Student and schedule: faster-rcnn_r50_fpn_1x_coco_student.py (this file inherits it).
#   python tools/train.py configs/det/faster-rcnn_r101_to_r50_fpn_1x_coco_tat.py
#   bash tools/dist_train.sh configs/det/faster-rcnn_r101_to_r50_fpn_1x_coco_tat.py 8
_base_ = './faster-rcnn_r50_fpn_1x_coco_student.py'
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='DetDistiller',
    student={{_base_.model}},
    # mmdet model zoo: faster-rcnn_r101_fpn_2x_coco, 39.8 box AP
    # (configs/faster_rcnn/metafile.yml).
    teacher=dict(
        config='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
        checkpoint='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/'
        'faster_rcnn_r101_fpn_2x_coco/'
        'faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth'),
    distill=[
        # level 0 (P2, 200x336 at 1333x800): hierarchical TaT: patch-group (8x8 patches, groups
        # of 4) + anchor-point (8x8 pooling)
        dict(student='neck', teacher='neck', index=0,
             losses=[
                 dict(type='HierarchicalTaTLoss', student_channels=256, teacher_channels=256,
                      patch_size=8, group_size=4, pool_size=8, patch_weight=1.0,
                      anchor_weight=0.5),
             ]),
        # level 1 (P3, 100x168 at 1333x800): hierarchical TaT: patch-group (8x8 patches, groups
        # of 4) + anchor-point (4x4 pooling)
        dict(student='neck', teacher='neck', index=1,
             losses=[
                 dict(type='HierarchicalTaTLoss', student_channels=256, teacher_channels=256,
                      patch_size=8, group_size=4, pool_size=4, patch_weight=1.0,
                      anchor_weight=0.5),
             ]),
        # levels [2, 3, 4] (P4-P6): full TaT (Eq. 7; conv3x3 gamma / phi, identity theta)
        dict(student='neck', teacher='neck', index=[2, 3, 4],
             losses=[
                 dict(type='TaTLoss', student_channels=256, teacher_channels=256,
                      loss_weight=1.0),
             ]),
    ])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
