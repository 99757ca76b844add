# MGD baseline: ResNet-34 -> ResNet-18 on ImageNet, on the pair and schedule of the TaT run
# (resnet34_to_resnet18_in1k_tat.py, which this file inherits: only the loss differs).
# MGD (Yang et al., ECCV 2022): 71.69 top-1 (authors' README; mmcls schedule, from scratch);
# on this schedule (pre-trained student, AdamW): not measured.
# Loss: 1.0 * CE + MGD on the last stage (7x7, 512 channels both) with the authors' ImageNet
# setting: channel masking, lambda 0.15, alpha 7e-5.
#   python tools/train.py configs/cls/resnet34_to_resnet18_in1k_mgd.py
#   bash tools/dist_train.sh configs/cls/resnet34_to_resnet18_in1k_mgd.py 8
_base_ = './resnet34_to_resnet18_in1k_tat.py'

model = dict(
    student=dict(head=dict(loss=dict(loss_weight=1.0))),
    distill=[
        dict(student='backbone.layer4', teacher='backbone.layer4',
             losses=[
                 dict(type='MGDLoss', student_channels=512, teacher_channels=512,
                      mask_type='channel', lambda_mgd=0.15, loss_weight=7e-5),
             ]),
    ])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
