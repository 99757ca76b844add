# ResNet-18 alone on ImageNet, on the schedule of the TaT ImageNet runs (TaT, Lin et al., CVPR 2022,
# Table 2); resnet34_to_resnet18_in1k_tat*.py inherit this file.
# Paper: 70.04 top-1 for the student. Ours: not measured.
# As in the authors' code the student starts from ImageNet-trained weights (here mmpretrain's
# resnet18_8xb32_in1k, 69.90 top-1) and trains 100 epochs with AdamW lr 1.6e-3 (the paper text says
# 1.6e-4; the authors' config has 1.6e-3), wd 5e-4, lr x0.1 at epochs 30/60/90, batch 8 GPUs x 256.
#   python tools/train.py configs/cls/resnet18_in1k_student.py
#   bash tools/dist_train.sh configs/cls/resnet18_in1k_student.py 8
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

model = dict(
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://download.openmmlab.com/mmclassification/v0/resnet/'
        'resnet18_8xb32_in1k_20210831-fbbb1da6.pth'))

# A typed preprocessor: the runner hands the top-level one to the model, and a distiller (unlike
# mmpretrain's classifiers) does not add the type itself.
data_preprocessor = dict(type='mmpretrain.ClsDataPreprocessor')

train_dataloader = dict(batch_size=256)  # x 8 GPUs = 2048
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=1.6e-3, weight_decay=5e-4))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
auto_scale_lr = dict(base_batch_size=2048)
