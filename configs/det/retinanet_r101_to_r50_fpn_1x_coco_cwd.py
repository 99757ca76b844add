# CWD baseline: RetinaNet R101-FPN -> R50-FPN on COCO, 1x schedule, on the pair of the TaT run
# (retinanet_r101_to_r50_fpn_1x_coco_tat.py, which this file inherits: only the loss differs).
# CWD (Shu et al., ICCV 2021): no number for this pair in the paper. Ours: not measured.
# Loss: channel-wise distillation on the five FPN levels (P3-P7), T = 1, weight 10 each (MMRazor's
# CWD RetinaNet / Faster R-CNN setting). Swapping TaT for CWD is the `distill` list below.
#   python tools/train.py configs/det/retinanet_r101_to_r50_fpn_1x_coco_cwd.py
#   bash tools/dist_train.sh configs/det/retinanet_r101_to_r50_fpn_1x_coco_cwd.py 8
_base_ = './retinanet_r101_to_r50_fpn_1x_coco_tat.py'

model = dict(distill=[
    dict(student='neck', teacher='neck', index=[0, 1, 2, 3, 4],
         losses=[dict(type='ChannelWiseDivergenceLoss', tau=1.0, loss_weight=10.0)]),
])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
