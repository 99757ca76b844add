# DIST baseline: ResNet-34 -> ResNet-18 on ImageNet, on the pair and schedule of the TaT run
# (resnet34_to_resnet18_in1k_tat.py, which this file inherits: only the loss differs).
# DIST (Huang et al., NeurIPS 2022) paper: 72.07 top-1 with its own schedule (SGD, from scratch,
# 100 ep; student alone 69.76); MMRazor's reproduction 71.17. On this schedule (pre-trained
# student, AdamW): not measured.
# Loss: 1.0 * CE + DIST on the logits with the paper's ImageNet setting: tau 1, beta = gamma = 1
# inside the loss, weighted 2 (MMRazor's dist_logits_resnet34_resnet18_8xb32_in1k.py: beta 1,
# gamma 1, tau 1, loss_weight 2; i.e. the paper's beta = gamma = 2). Swapping TaT for DIST is the
# `distill` list below plus the CE weight (the TaT run weighs CE by 0.1).
#   python tools/train.py configs/cls/resnet34_to_resnet18_in1k_dist.py
#   bash tools/dist_train.sh configs/cls/resnet34_to_resnet18_in1k_dist.py 8
_base_ = './resnet34_to_resnet18_in1k_tat.py'

model = dict(
    student=dict(head=dict(loss=dict(loss_weight=1.0))),
    distill=[
        dict(student='head.fc', teacher='head.fc',
             losses=[dict(type='DISTLoss', beta=1.0, gamma=1.0, tau=1.0, loss_weight=2.0)]),
    ])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
