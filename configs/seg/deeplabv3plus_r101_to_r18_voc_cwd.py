# CWD baseline: DeepLabV3+ ResNet-101 -> ResNet-18 on Pascal VOC 2012 + SBD aug, on the pair and
# schedule of the TaT run (deeplabv3plus_r101_to_r18_voc_tat.py, which this file inherits: only
# the loss differs).
# CWD (Shu et al., ICCV 2021) paper: no number for this pair. Ours: not measured.
# Loss: channel-wise distillation on the classifier logits (decode_head.conv_seg, 21 channels),
# T = 4, weight 3: the CWD authors' segmentation setting. Swapping TaT for CWD is the `distill`
# list below.
#   python tools/train.py configs/seg/deeplabv3plus_r101_to_r18_voc_cwd.py
#   bash tools/dist_train.sh configs/seg/deeplabv3plus_r101_to_r18_voc_cwd.py 4
_base_ = './deeplabv3plus_r101_to_r18_voc_tat.py'

model = dict(distill=[
    dict(student='decode_head.conv_seg', teacher='decode_head.conv_seg',
         losses=[dict(type='ChannelWiseDivergenceLoss', tau=4.0, loss_weight=3.0)]),
])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
