# Demo deep teacher (classification): mmpretrain's CIFAR ResNet-50 (bottleneck blocks, base width 8:
# layer4 is 8 * 8 * 4 = 256 wide, as in teacher.py) on the built-in digits: 50 layers against the
# student's 18, a larger receptive field and another block type -- the "semantic mismatch" case
# TaT is designed for (paper, Fig. 1).
#   python tools/train.py configs/demo/cls/teacher_r50.py
# Data, schedule and runtime: teacher.py; every demo distillation config takes either teacher
# unchanged (tools/demo.py --pair r50).
_base_ = './teacher.py'

model = dict(backbone=dict(depth=50, stem_channels=32, base_channels=8))
