# DKD baseline: ResNet-34 -> ResNet-18 on ImageNet, on the pair and schedule of the TaT run
# (resnet34_to_resnet18_in1k_tat.py, which this file inherits: only the loss differs).
# DKD (Zhao et al., CVPR 2022) paper: 71.70 top-1 with its own schedule (SGD, from scratch, 100
# ep); on this schedule (pre-trained student, AdamW): not measured.
# Loss: 1.0 * CE + DKD on the logits with the paper's ImageNet setting (alpha 1, beta 0.5, T 1);
# ClsDistiller passes the labels to DKDLoss. Swapping TaT for DKD is the `distill` list below plus
# the CE weight (the TaT run weighs CE by 0.1).
#   python tools/train.py configs/cls/resnet34_to_resnet18_in1k_dkd.py
#   bash tools/dist_train.sh configs/cls/resnet34_to_resnet18_in1k_dkd.py 8
_base_ = './resnet34_to_resnet18_in1k_tat.py'

model = dict(
    student=dict(head=dict(loss=dict(loss_weight=1.0))),
    distill=[
        dict(student='head.fc', teacher='head.fc',
             losses=[dict(type='DKDLoss', alpha=1.0, beta=0.5, temperature=1.0)]),
    ])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
