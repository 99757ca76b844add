# Demo student (detection) with the teacher's head width: student.py with 128-wide head convs
# (student.py: 64), the student of crosskd.py (CrossKD feeds the student's head features into
# the teacher's head, so the widths at the cut must match). Its own baseline:
#   python tools/train.py configs/demo/det/student_head128.py
_base_ = './student.py'

model = dict(bbox_head=dict(feat_channels=128))
