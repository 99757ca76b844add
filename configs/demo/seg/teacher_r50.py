# Demo deep teacher (segmentation): DeepLabV3+ with a ResNetV1c-50 (bottleneck blocks, base width
# 32) on the built-in digits canvases: deeper than the ResNet-18 student, with a larger receptive
# field and another block type -- the "semantic mismatch" case TaT is designed for (paper, Fig. 1).
#   python tools/train.py configs/demo/seg/teacher_r50.py
# Data, schedule and runtime: teacher.py. The distillation tap decode_head.sep_bottleneck is 128
# wide as in teacher.py, so every demo distillation config takes either teacher unchanged
# (tools/demo.py --pair r50 / tools/evidence.py switch model.teacher.config and checkpoint).
_base_ = './teacher.py'

model = dict(
    backbone=dict(depth=50, stem_channels=32, base_channels=32),
    decode_head=dict(in_channels=1024, c1_in_channels=128))
