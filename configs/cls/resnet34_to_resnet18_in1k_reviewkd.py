# ReviewKD baseline: ResNet-34 -> ResNet-18 on ImageNet, on the pair and schedule of the TaT run
# (resnet34_to_resnet18_in1k_tat.py, which this file inherits: only the loss differs).
# ReviewKD (Chen et al., CVPR 2021): 71.61 top-1 (also in the TaT paper's Table 2; SGD, from scratch);
# on this schedule (pre-trained student, AdamW): not measured.
# Loss: 1.0 * CE + 1.0 * ReviewKD (ABF + HCL) over the four stages and the pooled feature, as the
# authors' ImageNet model (channels 64, 128, 256, 512, 512, fusion width 512). One multi-tap
# distill entry: the loss gets the five features in this order (the neck output is (B, 512),
# used as a 1x1 map). The authors tap pre-ReLU stage features; these are mmpretrain's outputs.
#   python tools/train.py configs/cls/resnet34_to_resnet18_in1k_reviewkd.py
#   bash tools/dist_train.sh configs/cls/resnet34_to_resnet18_in1k_reviewkd.py 8
_base_ = './resnet34_to_resnet18_in1k_tat.py'

taps = ['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4', 'neck']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=1.0))),
    distill=[
        dict(student=taps, teacher=taps, index=[None, None, None, None, 0],
             losses=[
                 dict(type='ReviewKDLoss', student_channels=[64, 128, 256, 512, 512],
                      teacher_channels=[64, 128, 256, 512, 512], mid_channels=512,
                      loss_weight=1.0),
             ]),
    ])
del taps

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
