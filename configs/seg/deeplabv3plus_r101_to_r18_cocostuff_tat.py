# TaT: DeepLabV3+ ResNet-101 -> ResNet-18 on COCO-Stuff 10k (TaT, Lin et al., CVPR 2022).
# Paper: 28.75 mIoU (student alone 26.33, teacher 33.10). Ours: not measured.
# Patch-group TaT (32 patches per side, groups of 2, delta = 0.6) + anchor-point TaT (4x4 pooling,
# zeta = 0.6) on the decoder feature,
# one shared gamma / theta / phi for both terms (HierarchicalTaTLoss, as the authors' code).
# Student and schedule: deeplabv3plus_r18_cocostuff_student.py (this file inherits it).
#   python tools/train.py configs/seg/deeplabv3plus_r101_to_r18_cocostuff_tat.py
#   bash tools/dist_train.sh configs/seg/deeplabv3plus_r101_to_r18_cocostuff_tat.py 4
_base_ = './deeplabv3plus_r18_cocostuff_student.py'
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='SegDistiller',
    student={{_base_.model}},
    # No DeepLabV3+ COCO-Stuff 10k in the mmseg zoo: train the teacher first with
    #   python tools/train.py configs/seg/deeplabv3plus_r101_cocostuff_teacher.py
    # or point `checkpoint` at your own.
    teacher=dict(
        config='{{fileDirname}}/deeplabv3plus_r101_cocostuff_teacher.py',
        checkpoint='work_dirs/deeplabv3plus_r101_cocostuff_teacher/iter_40000.pth'),
    distill=[
        dict(student='decode_head.sep_bottleneck', teacher='decode_head.sep_bottleneck',
             losses=[
                 # L^P and L^A on one shared gamma / theta / phi (conv1x1 + BN), as the
                 # authors' distillation_loss_all; logged as loss_tat_pg / loss_tat_ap.
                 dict(type='HierarchicalTaTLoss', student_channels=128, teacher_channels=512,
                      patches_per_side=32, group_size=2, pool_size=4,
                      patch_weight=0.6, anchor_weight=0.6),
             ]),
    ])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
