# TaT + SoKD (DAFA and DAM): Faster R-CNN R101 -> R50 (FPN) on COCO, 1x. As
# faster-rcnn_r101_to_r50_fpn_1x_coco_tat_dam.py (DAM on every level, ground-truth supervised),
# with DAM and TaT on P4-P6 fed the teacher feature augmented by DAFA's learnt policies (search:
# first 7,330 iterations, ours). Ours: not measured.
#   python tools/train.py configs/det/faster-rcnn_r101_to_r50_fpn_1x_coco_tat_dam_dafa.py
_base_ = './faster-rcnn_r101_to_r50_fpn_1x_coco_tat_dafa.py'

dam = dict(dam=dict(num_classes=80), topk=8, dam_loss_weight=1.0)
model = dict(
    dam_gt_supervision=True,
    distill=[
        dict(student='neck', teacher='neck', index=0,
             losses=[
                 dict(type='DAMDistillLoss', student_channels=256, teacher_channels=256,
                      feature_loss=dict(type='HierarchicalTaTLoss', patch_size=8, group_size=4,
                                        pool_size=8, patch_weight=1.0,
                                        anchor_weight=0.5),
                      **dam),
             ]),
        dict(student='neck', teacher='neck', index=1,
             losses=[
                 dict(type='DAMDistillLoss', student_channels=256, teacher_channels=256,
                      feature_loss=dict(type='HierarchicalTaTLoss', patch_size=8, group_size=4,
                                        pool_size=4, patch_weight=1.0,
                                        anchor_weight=0.5),
                      **dam),
             ]),
        dict(student='neck', teacher='neck', index=[2, 3, 4],
             losses=[
                 dict(type='DAFADistillLoss', search=dict(search_iters=7330),
                      feature_loss=dict(type='DAMDistillLoss', student_channels=256,
                                        teacher_channels=256,
                                        feature_loss=dict(type='TaTLoss', loss_weight=1.0),
                                        **dam)),
             ]),
    ])
del dam

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
