# Demo deep teacher (detection): RetinaNet with a ResNet-50 (bottleneck blocks, base width 32) + FPN
# 128 (P3-P5) on the built-in digits canvases: deeper than the ResNet-18 student, with a larger
# receptive field and another block type -- the "semantic mismatch" case TaT is designed for.
#   python tools/train.py configs/demo/det/teacher_r50.py
# Data, schedule and runtime: teacher.py. The FPN is 128 wide as in teacher.py, so every demo
# distillation config takes either teacher unchanged (tools/demo.py --pair r50).
_base_ = './teacher.py'

model = dict(
    backbone=dict(depth=50, stem_channels=32, base_channels=32),
    neck=dict(in_channels=[128, 256, 512, 1024]))
