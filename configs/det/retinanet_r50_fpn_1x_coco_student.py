# RetinaNet R50-FPN alone on COCO (1x schedule): the student baseline of
# retinanet_r101_to_r50_fpn_1x_coco_tat*.py, which inherit this file. Exactly mmdet's
# retinanet_r50_fpn_1x_coco (model zoo: 36.5 box AP), plus tat_mm's stack fixes.
# Paper: none (TaT leaves detection to future work). Ours: not measured.
#   python tools/train.py configs/det/retinanet_r50_fpn_1x_coco_student.py
#   bash tools/dist_train.sh configs/det/retinanet_r50_fpn_1x_coco_student.py 8
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)
