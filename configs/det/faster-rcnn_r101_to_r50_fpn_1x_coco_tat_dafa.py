# TaT + SoKD's DAFA: Faster R-CNN R101 -> R50 (FPN) on COCO, 1x. As
# faster-rcnn_r101_to_r50_fpn_1x_coco_tat.py, with the full-TaT losses of P4-P6 fed the teacher
# feature augmented by DAFA's learnt policies (one per level; SoKD reports gains with Faster R-CNN
# FPN on COCO). Search during the first 7,330 iterations (one epoch at 16 images per batch; ours,
# untuned); P2/P3 keep their plain hierarchical (patch-group + anchor-point) TaT. Ours: not measured.
#   python tools/train.py configs/det/faster-rcnn_r101_to_r50_fpn_1x_coco_tat_dafa.py
#   bash tools/dist_train.sh configs/det/faster-rcnn_r101_to_r50_fpn_1x_coco_tat_dafa.py 8
_base_ = './faster-rcnn_r101_to_r50_fpn_1x_coco_tat.py'

model = dict(distill=[
    dict(student='neck', teacher='neck', index=0,
         losses=[
             dict(type='HierarchicalTaTLoss', student_channels=256, teacher_channels=256,
                  patch_size=8, group_size=4, pool_size=8, patch_weight=1.0,
                  anchor_weight=0.5),
         ]),
    dict(student='neck', teacher='neck', index=1,
         losses=[
             dict(type='HierarchicalTaTLoss', student_channels=256, teacher_channels=256,
                  patch_size=8, group_size=4, pool_size=4, patch_weight=1.0,
                  anchor_weight=0.5),
         ]),
    dict(student='neck', teacher='neck', index=[2, 3, 4],
         losses=[
             dict(type='DAFADistillLoss', search=dict(search_iters=7330),
                  feature_loss=dict(type='TaTLoss', student_channels=256, teacher_channels=256,
                                    loss_weight=1.0)),
         ]),
])
# Two optimizers: 'model' (the SGD above) and 'dafa' (Adam, betas (0.5, 0.999), the search
# parameters); the lr schedule applies to 'model' only.
optim_wrapper = dict(constructor='DAFAOptimWrapperConstructor',
                     dafa=dict(optimizer=dict(type='Adam', lr=0.005, betas=(0.5, 0.999))))
param_scheduler = dict(_delete_=True, model={{_base_.param_scheduler}}, dafa=[])
model_wrapper_cfg = dict(type='DAFADistributedDataParallel')

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
