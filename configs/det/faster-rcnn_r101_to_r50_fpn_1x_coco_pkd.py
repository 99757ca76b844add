# PKD baseline: Faster R-CNN R101-FPN -> R50-FPN on COCO, 1x schedule, on the pair of the TaT run
# (faster-rcnn_r101_to_r50_fpn_1x_coco_tat.py, which this file inherits: only the loss differs).
# PKD (Cao et al., NeurIPS 2022): no number for this pair and schedule (the paper's R101 -> R50
# Faster R-CNN runs 2x). Ours: not measured.
# Loss: PKD (Pearson correlation of channel-standardised features) on FPN levels P2-P5
# (neck indices 0-3), weight 6 each: the authors' Faster R-CNN setting (MMRazor configs).
#   python tools/train.py configs/det/faster-rcnn_r101_to_r50_fpn_1x_coco_pkd.py
#   bash tools/dist_train.sh configs/det/faster-rcnn_r101_to_r50_fpn_1x_coco_pkd.py 8
_base_ = './faster-rcnn_r101_to_r50_fpn_1x_coco_tat.py'

model = dict(distill=[
    dict(student='neck', teacher='neck', index=[0, 1, 2, 3],
         losses=[dict(type='PKDLoss', student_channels=256, teacher_channels=256, loss_weight=6.0)]),
])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
