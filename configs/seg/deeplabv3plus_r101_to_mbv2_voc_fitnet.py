# FitNet baseline: DeepLabV3+ ResNet-101 -> MobileNetV2 on Pascal VOC 2012 + SBD aug (TaT, Lin et
# al., CVPR 2022).
# Paper: no number for this run. Ours: not measured.
# FitNet (1x1 conv + BN connector, MSE, weight 0.1: the patch-group weight, untuned) on the decoder
# feature.
# Student and schedule: deeplabv3plus_mbv2_voc_student.py (this file inherits it).
#   python tools/train.py configs/seg/deeplabv3plus_r101_to_mbv2_voc_fitnet.py
#   bash tools/dist_train.sh configs/seg/deeplabv3plus_r101_to_mbv2_voc_fitnet.py 4
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
             losses=[dict(type='FitNetLoss', student_channels=512, teacher_channels=512,
                          connector='conv1x1', loss_weight=0.1)]),
    ])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
