# Demo teacher (segmentation): DeepLabV3+ with a full-width ResNetV1c-18 on the built-in digits
# canvases (96x96, 11 classes incl. background), trained from scratch on CPU in a few minutes.
#   python tools/train.py configs/demo/seg/teacher.py            (or: python tools/demo.py --tasks seg)
# Output stride 16 (the maps are small), ASPP rates scaled to the 6x6 bottleneck map, no auxiliary
# head, BN (not SyncBN), no pre-trained weights (no internet).
_base_ = ['mmseg::_base_/models/deeplabv3plus_r50-d8.py', 'mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

norm_cfg = dict(type='BN', requires_grad=True)
crop_size = (96, 96)
data_root = 'data/digits'  # the canvases are written here on first use
# Canvases of the three splits; test: digits no train / val canvas uses, scored once at the end
# (docs/evidence.md). All three datasets must pass the same arguments (one cache per data_root).
digits = dict(num_train=400, num_val=100, num_test=100, test_fraction=0.2)
max_iters = 600  # the students (student.py) train for 300
batch_size = 8

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(depth=18, norm_cfg=norm_cfg, strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),
    # decode_head.sep_bottleneck (the TaT tap, stride 4: 24x24) is `channels` wide.
    decode_head=dict(in_channels=512, c1_in_channels=64, c1_channels=16, channels=128,
                     dilations=(1, 2, 3, 4), num_classes=11, norm_cfg=norm_cfg,
                     # ~91 % of the training pixels are background: weight it 0.1 (set from the
                     # training split's class frequencies, not tuned on val)
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                                      class_weight=[0.1] + [1.0] * 10)),
    auxiliary_head=None)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),  # no flips: a mirrored digit is another glyph
]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=batch_size, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='DigitsSegDataset', data_root=data_root, split='train',
                 pipeline=train_pipeline, **digits))
val_dataloader = dict(
    batch_size=10, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='DigitsSegDataset', data_root=data_root, split='val', test_mode=True,
                 pipeline=test_pipeline, **digits))
test_dataloader = dict(
    batch_size=10, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='DigitsSegDataset', data_root=data_root, split='test', test_mode=True,
                 pipeline=test_pipeline, **digits))
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=1e-5, by_epoch=False, begin=0,
         end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
