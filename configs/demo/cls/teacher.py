# Demo teacher (classification): mmpretrain's CIFAR ResNet-18 at half width (base channels 32) on
# the built-in digits (scikit-learn's 8x8 digits upscaled to 32x32, 1,438 train / 359 val, 10
# classes), trained from scratch on CPU in about a minute.
#   python tools/train.py configs/demo/cls/teacher.py            (or: python tools/demo.py --tasks cls)
_base_ = ['mmpretrain::_base_/models/resnet18_cifar.py', 'mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

max_iters = 300
batch_size = 32

data_preprocessor = dict(num_classes=10, mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5],
                         to_rgb=False)
model = dict(
    # backbone.layer4 (the TaT tap): 4x4, 8 * base_channels wide.
    backbone=dict(stem_channels=32, base_channels=32),
    head=dict(num_classes=10, in_channels=256))

# Splits of the 1,797 digits: 20 % val, 20 % held-out test (scored once at the end,
# docs/evidence.md); training uses only the first `num_train` of the remaining 1,079, so that
# the students are far from saturated and there is room for a teacher to help.
digits = dict(test_fraction=0.2)
num_train = 150

train_pipeline = [dict(type='RandomCrop', crop_size=32, padding=2), dict(type='PackInputs')]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=batch_size, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='DigitsClassificationDataset', split='train', pipeline=train_pipeline,
                 indices=num_train, **digits))
val_dataloader = dict(
    batch_size=128, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='DigitsClassificationDataset', split='val', test_mode=True,
                 pipeline=test_pipeline, **digits))
test_dataloader = dict(
    batch_size=128, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='DigitsClassificationDataset', split='test', test_mode=True,
                 pipeline=test_pipeline, **digits))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=1e-5, by_epoch=False, begin=0,
         end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
