# Demo teacher (detection): RetinaNet with a full-width ResNet-18 + FPN (128 wide, P3-P5) on the
# built-in digits canvases (96x96, one box per digit, 10 classes), trained from scratch on CPU.
#   python tools/train.py configs/demo/det/teacher.py            (or: python tools/demo.py --tasks det)
# Anchors: 3 scales x 3 ratios at strides 8/16/32 (32-64 px at P3 fits the 24-40 px digits).
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['tat_mm'], allow_failed_imports=False)

data_root = 'data/digits/'  # the canvases are written here on first use
# Canvases of the three splits; test: digits no train / val canvas uses, scored once at the end
# (docs/evidence.md). All three datasets must pass the same arguments (one cache per data_root).
digits = dict(num_train=400, num_val=100, num_test=100, test_fraction=0.2)
max_iters = 400
batch_size = 8

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    # neck level 0 (P3, stride 8: 12x12) is the distillation tap, `out_channels` wide.
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128, start_level=1,
              add_extra_convs=False, num_outs=3),
    bbox_head=dict(num_classes=10, in_channels=128, feat_channels=128, stacked_convs=2,
                   anchor_generator=dict(strides=[8, 16, 32])),
    test_cfg=dict(nms_pre=200, max_per_img=20))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(96, 96), keep_ratio=True),  # a no-op that sets scale_factor
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(96, 96), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor')),
]
train_dataloader = dict(
    batch_size=batch_size, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(type='DigitsDetDataset', data_root=data_root, split='train',
                 filter_cfg=dict(filter_empty_gt=True), pipeline=train_pipeline, **digits))
val_dataloader = dict(
    batch_size=10, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='DigitsDetDataset', data_root=data_root, split='val', test_mode=True,
                 pipeline=test_pipeline, **digits))
test_dataloader = dict(
    batch_size=10, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='DigitsDetDataset', data_root=data_root, split='test', test_mode=True,
                 pipeline=test_pipeline, **digits))
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json',
                     metric='bbox', format_only=False)
test_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_test.json',
                      metric='bbox', format_only=False)

optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
                     clip_grad=dict(max_norm=35, norm_type=2))
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
