# KD baseline: DeepLabV3+ ResNet-101 -> ResNet-18 on Pascal VOC 2012 + SBD aug (TaT, Lin et al.,
# CVPR 2022).
# Paper: no number for this run. Ours: not measured.
# Pixel-wise KD (Hinton, T = 1, weight 1.0; untuned) on the classifier logits.
# Student and schedule: deeplabv3plus_r18_voc_student.py (this file inherits it).
#   python tools/train.py configs/seg/deeplabv3plus_r101_to_r18_voc_kd.py
#   bash tools/dist_train.sh configs/seg/deeplabv3plus_r101_to_r18_voc_kd.py 4
_base_ = './deeplabv3plus_r18_voc_student.py'
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
        dict(student='decode_head.conv_seg', teacher='decode_head.conv_seg',
             losses=[dict(type='KDLoss', temperature=1.0, loss_weight=1.0)]),
    ])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
