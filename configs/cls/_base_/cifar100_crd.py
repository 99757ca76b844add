# CIFAR-100 data, runtime and the CRD training schedule (Tian et al., ICLR 2020; the protocol of the
# CIFAR-100 results in TaT Table 1): SGD lr 0.05, momentum 0.9, wd 5e-4, batch 64 on one GPU,
# 240 epochs, lr x0.1 at epochs 150, 180 and 210. Shared by every configs/cls/*cifar100* file.
_base_ = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py', 'mmpretrain::_base_/default_runtime.py'
]
custom_imports = dict(
    imports=['tat_mm', 'tat_mm.models.cifar_backbones'], allow_failed_imports=False)

# A typed preprocessor: the runner hands the top-level one to the model, and a distiller (unlike
# mmpretrain's classifiers) does not add the type itself.
data_preprocessor = dict(type='mmpretrain.ClsDataPreprocessor')

train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[150, 180, 210], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=240, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=2))
