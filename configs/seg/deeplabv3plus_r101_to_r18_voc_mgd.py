# MGD baseline: DeepLabV3+ ResNet-101 -> ResNet-18 on Pascal VOC 2012 + SBD aug, on the pair and
# schedule of the TaT run (deeplabv3plus_r101_to_r18_voc_tat.py, which this file inherits: only
# the losses differ).
# MGD (Yang et al., ECCV 2022) paper: no number for this pair. Ours: not measured.
# Losses as the MGD authors' segmentation distiller: MGD on the last backbone stage (stride 8;
# 512 -> 2048 channels through MGD's 1x1 align; alpha 2e-5, lambda 0.75) plus CWD on the logits
# (T = 4, weight 3).
#   python tools/train.py configs/seg/deeplabv3plus_r101_to_r18_voc_mgd.py
#   bash tools/dist_train.sh configs/seg/deeplabv3plus_r101_to_r18_voc_mgd.py 4
_base_ = './deeplabv3plus_r101_to_r18_voc_tat.py'

model = dict(distill=[
    dict(student='backbone.layer4', teacher='backbone.layer4',
         losses=[
             dict(type='MGDLoss', student_channels=512, teacher_channels=2048, lambda_mgd=0.75,
                  loss_weight=2e-5),
         ]),
    dict(student='decode_head.conv_seg', teacher='decode_head.conv_seg',
         losses=[dict(type='ChannelWiseDivergenceLoss', tau=4.0, loss_weight=3.0)]),
])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
