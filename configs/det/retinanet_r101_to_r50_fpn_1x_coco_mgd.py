# MGD baseline: RetinaNet R101-FPN -> R50-FPN on COCO, 1x schedule, on the pair of the TaT run
# (retinanet_r101_to_r50_fpn_1x_coco_tat.py, which this file inherits: only the loss differs).
# MGD (Yang et al., ECCV 2022): no number for this pair and schedule (the paper's RetinaNet runs
# have an X101 teacher, 2x). Ours: not measured.
# Loss: MGD on the five FPN levels (P3-P7), spatial masking, alpha 2e-5, lambda 0.65 each: the
# authors' RetinaNet setting. Each level has its own generation block (two 3x3 convs, 256 wide).
#   python tools/train.py configs/det/retinanet_r101_to_r50_fpn_1x_coco_mgd.py
#   bash tools/dist_train.sh configs/det/retinanet_r101_to_r50_fpn_1x_coco_mgd.py 8
_base_ = './retinanet_r101_to_r50_fpn_1x_coco_tat.py'

model = dict(distill=[
    dict(student='neck', teacher='neck', index=[0, 1, 2, 3, 4],
         losses=[
             dict(type='MGDLoss', student_channels=256, teacher_channels=256, lambda_mgd=0.65,
                  loss_weight=2e-5),
         ]),
])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
