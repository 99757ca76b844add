# CrossKD: ATSS R101-FPN -> R50-FPN on COCO, 1x schedule, the paper's setting (Wang et al.,
# CVPR 2024; the authors' configs/crosskd/crosskd_r50_atss_r101_fpn_1x_coco.py).
# Paper: 39.4 -> 41.8 box AP (teacher 41.5). Ours: not measured.
# Cross-head terms: KDQualityFocalLoss (classification), GIoU of the decoded boxes (weighted by
# the teacher's best class score) and a sigmoid cross-entropy of the positives' centerness
# towards the teacher's.
#   python tools/train.py configs/det/atss_r101_to_r50_fpn_1x_coco_crosskd.py
#   bash tools/dist_train.sh configs/det/atss_r101_to_r50_fpn_1x_coco_crosskd.py 8
_base_ = ['mmdet::atss/atss_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='DetDistiller',
    student={{_base_.model}},
    # mmdet model zoo: atss_r101_fpn_1x_coco, 41.5 box AP (configs/atss/metafile.yml)
    teacher=dict(
        config='mmdet::atss/atss_r101_fpn_1x_coco.py',
        checkpoint='https://download.openmmlab.com/mmdetection/v2.0/atss/'
        'atss_r101_fpn_1x_coco/atss_r101_fpn_1x_20200825-dfcadd6f.pth'),
    distill=[],
    cross_head=dict(
        reused_teacher_head_idx=3,
        loss_cls_kd=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0),
        loss_reg_kd=dict(type='GIoULoss', loss_weight=1.0),
        loss_center_kd=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)))

custom_hooks = [dict(type='DistillHealthHook')]
