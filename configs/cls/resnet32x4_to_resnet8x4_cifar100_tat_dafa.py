# TaT + SoKD's DAFA: ResNet-32x4 -> ResNet-8x4 on CIFAR-100. The TaT loss of
# resnet32x4_to_resnet8x4_cifar100_tat.py sees the teacher feature augmented by a learnt policy
# (DAFA, Shen et al.: 36 pairs of feature operations, bi-level search during the first iterations).
# SoKD reports DAFA on CIFAR-100 with FitNet R50 -> MobileNetV2 (+3.96); this pair and TaT are ours.
# Ours: not measured. search_iters (first 5 of 240 epochs at batch 64: 5 x 782) is ours, untuned.
# Train the teacher first (no OpenMMLab checkpoint exists):
#   python tools/train.py configs/cls/resnet32x4_cifar100_teacher.py
#   python tools/train.py configs/cls/resnet32x4_to_resnet8x4_cifar100_tat_dafa.py
#   bash tools/dist_train.sh configs/cls/resnet32x4_to_resnet8x4_cifar100_tat_dafa.py 4
_base_ = './resnet32x4_to_resnet8x4_cifar100_tat.py'

model = dict(distill=[
    dict(student='backbone.layer3', teacher='backbone.layer3',  # 8x8 maps
         losses=[
             dict(type='DAFADistillLoss',
                  search=dict(search_iters=3910),
                  feature_loss=dict(type='TaTLoss', student_channels=256, teacher_channels=256,
                                    query_embed='conv3x3', key_embed='identity',
                                    value_embed='conv3x3', loss_weight=1.0)),
         ]),
])
# Two optimizers: 'model' (the SGD above, student + distillation modules) and 'dafa' (Adam,
# betas (0.5, 0.999), the search parameters); the lr schedule applies to 'model' only.
optim_wrapper = dict(constructor='DAFAOptimWrapperConstructor',
                     dafa=dict(optimizer=dict(type='Adam', lr=0.005, betas=(0.5, 0.999))))
param_scheduler = dict(_delete_=True, model={{_base_.param_scheduler}}, dafa=[])
# tools/dist_train.sh: DDP whose train_step is DAFA's bi-level step (ignored on one process).
model_wrapper_cfg = dict(type='DAFADistributedDataParallel')

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
