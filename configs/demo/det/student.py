# Demo student (detection): the teacher's RetinaNet at a quarter of the backbone width (ResNet-18,
# base channels 16) and half the FPN / head width (64), alone.
#   python tools/train.py configs/demo/det/student.py
_base_ = './teacher.py'

model = dict(
    backbone=dict(stem_channels=16, base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64),
    bbox_head=dict(in_channels=64, feat_channels=64))

# The students' schedule: 300 iterations (the teacher: 400) (the demo's 15-minute budget on 2 CPU cores).
max_iters = 300
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=1e-5, by_epoch=False, begin=0,
         end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
