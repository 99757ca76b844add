# DIST baseline: DeepLabV3+ ResNet-101 -> ResNet-18 on Pascal VOC 2012 + SBD aug, on the pair,
# teacher and schedule of the pixel-wise KD run (deeplabv3plus_r101_to_r18_voc_kd.py, which this
# file inherits: only the loss differs).
# DIST (Huang et al., NeurIPS 2022) paper: no number for this pair (Cityscapes DeepLabV3 R101 ->
# R18: 77.10 mIoU, student alone 74.21). Ours: not measured.
# Loss: DIST on the classifier logits (decode_head.conv_seg), every pixel a sample, tau 1,
# beta = gamma = 1, weight 1: the authors' segmentation setting (hunto/DIST_KD segmentation/:
# DIST() with --lambda-kd 1). The authors also distil the auxiliary head's logits with weight 0.4;
# mmseg runs a teacher's auxiliary head only in loss mode, so this config distils the decoder only.
#   python tools/train.py configs/seg/deeplabv3plus_r101_to_r18_voc_dist.py
#   bash tools/dist_train.sh configs/seg/deeplabv3plus_r101_to_r18_voc_dist.py 4
_base_ = './deeplabv3plus_r101_to_r18_voc_kd.py'

model = dict(distill=[
    dict(student='decode_head.conv_seg', teacher='decode_head.conv_seg',
         losses=[dict(type='DISTLoss', beta=1.0, gamma=1.0, tau=1.0, loss_weight=1.0)]),
])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
