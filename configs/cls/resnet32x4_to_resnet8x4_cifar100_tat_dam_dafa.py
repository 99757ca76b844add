# TaT + SoKD (DAFA and DAM): ResNet-32x4 -> ResNet-8x4 on CIFAR-100. As
# resnet32x4_to_resnet8x4_cifar100_tat_dafa.py, with the TaT loss confined to the areas SoKD's
# DAM finds on the augmented teacher and on the student (SoKD's full plug-in, Fig. 2).
# Ours: not measured; DAM settings as the public SoKD code on CIFAR-sized maps (top-8 areas).
# Train the teacher first (no OpenMMLab checkpoint exists):
#   python tools/train.py configs/cls/resnet32x4_cifar100_teacher.py
#   python tools/train.py configs/cls/resnet32x4_to_resnet8x4_cifar100_tat_dam_dafa.py
_base_ = './resnet32x4_to_resnet8x4_cifar100_tat_dafa.py'

model = dict(distill=[
    dict(student='backbone.layer3', teacher='backbone.layer3',
         losses=[
             dict(type='DAFADistillLoss',
                  search=dict(search_iters=3910),
                  feature_loss=dict(
                      type='DAMDistillLoss', student_channels=256, teacher_channels=256,
                      feature_loss=dict(type='TaTLoss', query_embed='conv3x3',
                                        key_embed='identity', value_embed='conv3x3',
                                        loss_weight=1.0),
                      dam=dict(num_classes=100), topk=8, dam_loss_weight=1.0)),
         ]),
])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
