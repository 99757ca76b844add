# TaT + SoKD (DAFA and DAM): DeepLabV3+ R101 -> R18 on Pascal VOC aug. As
# deeplabv3plus_r101_to_r18_voc_tat_dam.py, with DAM (and the TaT loss inside it) fed the teacher
# feature augmented by DAFA's learnt policy (search: first 4,000 of 40,000 iterations, ours).
# Ours: not measured.
#   python tools/train.py configs/seg/deeplabv3plus_r101_to_r18_voc_tat_dam_dafa.py
_base_ = './deeplabv3plus_r101_to_r18_voc_tat_dafa.py'

model = dict(distill=[
    dict(student='decode_head.sep_bottleneck', teacher='decode_head.sep_bottleneck',
         losses=[
             dict(type='DAFADistillLoss',
                  search=dict(search_iters=4000),
                  feature_loss=dict(
                      type='DAMDistillLoss', student_channels=128, teacher_channels=512,
                      feature_loss=dict(type='HierarchicalTaTLoss', patches_per_side=16,
                                        group_size=4, pool_size=4, patch_weight=0.1,
                                        anchor_weight=0.05),
                      dam=dict(num_classes=1, init_size=8.0), topk=16, dam_loss_weight=1.0)),
         ]),
])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
