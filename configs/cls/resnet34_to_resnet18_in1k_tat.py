# TaT: ResNet-34 -> ResNet-18 on ImageNet, without KD (TaT, Lin et al., CVPR 2022, Table 2).
# Paper: 72.07 top-1 (student alone 70.04, teacher 73.31). Ours: not measured.
# Loss of the authors' run: 0.1 * CE + 0.2 * TaT on the layer4 output (7x7), gamma / phi =
# conv3x3 + BN, theta = identity. Student and schedule: resnet18_in1k_student.py (inherited).
#   python tools/train.py configs/cls/resnet34_to_resnet18_in1k_tat.py
#   bash tools/dist_train.sh configs/cls/resnet34_to_resnet18_in1k_tat.py 8
_base_ = './resnet18_in1k_student.py'
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

# The student of the base config, its cross-entropy weighted by alpha = 0.1 (`_base_` is the parsed
# base config: MMEngine python configs can read and copy it).
student = _base_.model.copy()
student.head = dict(_base_.model.head, loss=dict(type='CrossEntropyLoss', loss_weight=0.1))

model = dict(
    _delete_=True,
    type='ClsDistiller',
    student=student,
    # mmpretrain model zoo: resnet34_8xb32_in1k, 73.62 top-1 (configs/resnet/metafile.yml); the
    # paper's teacher (torchvision) has 73.31.
    teacher=dict(
        config='mmpretrain::resnet/resnet34_8xb32_in1k.py',
        checkpoint='https://download.openmmlab.com/mmclassification/v0/resnet/'
        'resnet34_8xb32_in1k_20210831-f257d4e6.pth'),
    distill=[
        dict(student='backbone.layer4', teacher='backbone.layer4',
             losses=[
                 dict(type='TaTLoss', student_channels=512, teacher_channels=512,
                      query_embed='conv3x3', key_embed='identity', value_embed='conv3x3',
                      loss_weight=0.2),
             ]),
    ])
del student

# Distillation health: the teacher scored on val before training (a chance-level teacher stops
# the run), gradient shares and TaT / DAM / DAFA statistics every 50 iterations, warnings with
# what to change (docs/distill_health.md).
custom_hooks = [dict(type='DistillHealthHook')]
