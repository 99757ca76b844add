# FitNet baseline: DeepLabV3+ ResNet-101 -> ResNet-18 on COCO-Stuff 10k (TaT, Lin et al., CVPR
# 2022).
# Paper: no number for this run. Ours: not measured.
# FitNet (1x1 conv + BN connector, MSE, weight 0.6: the patch-group weight, untuned) on the decoder
# feature.
# Student and schedule: deeplabv3plus_r18_cocostuff_student.py (this file inherits it).
#   python tools/train.py configs/seg/deeplabv3plus_r101_to_r18_cocostuff_fitnet.py
#   bash tools/dist_train.sh configs/seg/deeplabv3plus_r101_to_r18_cocostuff_fitnet.py 4
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
             losses=[dict(type='FitNetLoss', student_channels=128, teacher_channels=512,
                          connector='conv1x1', loss_weight=0.6)]),
    ])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
