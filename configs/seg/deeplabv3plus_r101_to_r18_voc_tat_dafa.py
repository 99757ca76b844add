# TaT + SoKD's DAFA: DeepLabV3+ R101 -> R18 on Pascal VOC aug. The hierarchical TaT loss of
# deeplabv3plus_r101_to_r18_voc_tat.py sees the teacher feature augmented by a policy learnt by
# DAFA's bi-level search (Shen et al.) during the first 4,000 of 40,000 iterations (ours, untuned).
# Ours: not measured.
#   python tools/train.py configs/seg/deeplabv3plus_r101_to_r18_voc_tat_dafa.py
#   bash tools/dist_train.sh configs/seg/deeplabv3plus_r101_to_r18_voc_tat_dafa.py 4
_base_ = './deeplabv3plus_r101_to_r18_voc_tat.py'

model = dict(distill=[
    dict(student='decode_head.sep_bottleneck', teacher='decode_head.sep_bottleneck',
         losses=[
             dict(type='DAFADistillLoss',
                  search=dict(search_iters=4000),
                  feature_loss=dict(type='HierarchicalTaTLoss', student_channels=128,
                                    teacher_channels=512, patches_per_side=16, group_size=4,
                                    pool_size=4, patch_weight=0.1, anchor_weight=0.05)),
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
