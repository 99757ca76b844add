# Demo student (segmentation): the teacher's DeepLabV3+ / ResNetV1c-18 at a quarter of its width
# (stem and base channels 16, decoder 32 wide), alone. ~16x fewer FLOPs than the teacher.
#   python tools/train.py configs/demo/seg/student.py
# Data and runtime: teacher.py; schedule below (the distillation configs inherit both).
_base_ = './teacher.py'

model = dict(
    backbone=dict(stem_channels=16, base_channels=16),
    decode_head=dict(in_channels=128, c1_in_channels=16, c1_channels=8, channels=32))

# The students' schedule: half the teacher's (the demo's 15-minute budget on 2 CPU cores).
max_iters = 300
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=1e-5, by_epoch=False, begin=0,
         end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
