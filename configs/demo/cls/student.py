# Demo student (classification): the teacher's CIFAR ResNet-18 at a quarter of its width (base
# channels 8, layer4 64 wide; ~16x fewer FLOPs), alone.
#   python tools/train.py configs/demo/cls/student.py
_base_ = './teacher.py'

model = dict(backbone=dict(stem_channels=8, base_channels=8), head=dict(in_channels=64))
