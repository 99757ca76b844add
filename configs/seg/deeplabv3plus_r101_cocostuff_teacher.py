# DeepLabV3+ ResNet-101 (output stride 8) on COCO-Stuff 10k: the teacher of the COCO-Stuff TaT runs.
# The mmseg model zoo has no DeepLabV3+ on COCO-Stuff 10k, so train it with this config first; the
# distillation configs load work_dirs/deeplabv3plus_r101_cocostuff_teacher/iter_40000.pth.
# mmseg's recipe for its COCO-Stuff 10k DeepLabV3 R101 (40k iterations, 4 GPUs x 4 images, poly
# lr 0.01). The paper's teacher has 33.10 mIoU (authors' script: 200 epochs, poly lr 0.004,
# crop 513).
# Ours: not measured.
#   python tools/train.py configs/seg/deeplabv3plus_r101_cocostuff_teacher.py
#   bash tools/dist_train.sh configs/seg/deeplabv3plus_r101_cocostuff_teacher.py 4
_base_ = [
    'mmseg::_base_/models/deeplabv3plus_r50-d8.py', 'mmseg::_base_/datasets/coco-stuff10k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_40k.py'
]
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(depth=101),
    decode_head=dict(num_classes=171),
    auxiliary_head=dict(num_classes=171))
