# AT baseline: ResNet-34 -> ResNet-18 on ImageNet, on the pair and schedule of the TaT run
# (resnet34_to_resnet18_in1k_tat.py, which this file inherits: only the loss differs).
# AT (Zagoruyko & Komodakis, ICLR 2017): 70.59 top-1 in the TaT paper's Table 2 (its own
# schedule); on this schedule (pre-trained student, AdamW): not measured.
# Loss: 1.0 * CE + attention transfer (p = 2) after each of the four stages, each weighted
# beta = 1000 as in the authors' code (attention-transfer's `opt.beta * sum(loss_groups)`, `--beta
# 1e+3`) and mdistiller; the paper's formula has beta / 2 = 500 (was the weight here before
# issue 25, docs/baselines.md).
#   python tools/train.py configs/cls/resnet34_to_resnet18_in1k_at.py
#   bash tools/dist_train.sh configs/cls/resnet34_to_resnet18_in1k_at.py 8
_base_ = './resnet34_to_resnet18_in1k_tat.py'

model = dict(
    student=dict(head=dict(loss=dict(loss_weight=1.0))),
    distill=[
        dict(student=f'backbone.layer{i}', teacher=f'backbone.layer{i}',
             losses=[dict(type='ATLoss', p=2.0, loss_weight=1000.0)]) for i in (1, 2, 3, 4)
    ])

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
