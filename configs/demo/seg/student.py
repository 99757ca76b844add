# Demo student (segmentation): the teacher's DeepLabV3+ / ResNetV1c-18 at half its width (stem and
# base channels 32, decoder 64 wide), alone. ~4x fewer FLOPs than teacher.py.
#   python tools/train.py configs/demo/seg/student.py
# Data and runtime: teacher.py; schedule below (the distillation configs inherit both).
# Why this width and schedule (chosen on val with the student alone, docs/evidence.md): the
# quarter-width student never left the all-background solution (val mIoU 8.07 at 300 and 9.43 at
# 600 iterations); at half width and 600 iterations it reaches 25.3 (the teacher: ~50).
_base_ = './teacher.py'

model = dict(
    backbone=dict(stem_channels=32, base_channels=32),
    decode_head=dict(in_channels=256, c1_in_channels=32, c1_channels=16, channels=64))

# The students' schedule: the teacher's (600 iterations of 8 canvases).
max_iters = 600
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=1e-5, by_epoch=False, begin=0,
         end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
