# TaT: DeepLabV3+ ResNet-101 -> MobileNetV2 on Pascal VOC 2012 + SBD aug (TaT, Lin et al., CVPR
# 2022).
# Paper: 73.85 mIoU (student alone 68.46, teacher 78.43). Ours: not measured.
# Patch-group TaT (32 patches per side, groups of 1, delta = 0.1) + anchor-point TaT (2x2 pooling,
# zeta = 0.05) on the decoder feature,
# one shared gamma / theta / phi for both terms (HierarchicalTaTLoss, as the authors' code).
# Student and schedule: deeplabv3plus_mbv2_voc_student.py (this file inherits it).
#   python tools/train.py configs/seg/deeplabv3plus_r101_to_mbv2_voc_tat.py
#   bash tools/dist_train.sh configs/seg/deeplabv3plus_r101_to_mbv2_voc_tat.py 4
_base_ = './deeplabv3plus_mbv2_voc_student.py'
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='SegDistiller',
    student={{_base_.model}},
    # mmseg model zoo: deeplabv3plus_r101-d8_4xb4-40k_voc12aug-512x512, 78.62 mIoU
    # (configs/deeplabv3plus/metafile.yaml); the paper's teacher has 78.43.
    teacher=dict(
        config='mmseg::deeplabv3plus/deeplabv3plus_r101-d8_4xb4-40k_voc12aug-512x512.py',
        checkpoint='https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3plus/'
        'deeplabv3plus_r101-d8_512x512_40k_voc12aug/'
        'deeplabv3plus_r101-d8_512x512_40k_voc12aug_20200613_205333-faf03387.pth'),
    distill=[
        dict(student='decode_head.sep_bottleneck', teacher='decode_head.sep_bottleneck',
             losses=[
                 # L^P and L^A on one shared gamma / theta / phi (conv1x1 + BN), as the
                 # authors' distillation_loss_all; logged as loss_tat_pg / loss_tat_ap.
                 dict(type='HierarchicalTaTLoss', student_channels=512, teacher_channels=512,
                      patches_per_side=32, group_size=1, pool_size=2,
                      patch_weight=0.1, anchor_weight=0.05),
             ]),
    ])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
