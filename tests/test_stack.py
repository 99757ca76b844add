"""The pinned stack works on CPU: real upstream configs build and take a real train step.

Each test builds the model from the upstream library's own config file (made offline by
``tat_mm.testing.offline_model_config``), then runs ``model.train_step`` — data preprocessor,
``mode='loss'``, backward and an SGD step through an MMEngine ``OptimWrapper`` — and checks that the
losses are finite and the weights moved.
"""
import importlib

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

import tat_mm  # noqa: F401  (applies the stack fixes)
from tat_mm.testing import fake_batch, offline_model_config

CASES = {
    'deeplabv3plus_r18': ('mmseg', 'seg', 'deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py'),
    'resnet18': ('mmpretrain', 'cls', 'resnet/resnet18_8xb32_in1k.py'),
    'faster_rcnn_r50_fpn': ('mmdet', 'det', 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'),
    'retinanet_r50_fpn': ('mmdet', 'det', 'retinanet/retinanet_r50_fpn_1x_coco.py'),
}


def test_all_libraries_import():
    for name in ('mmseg', 'mmdet', 'mmpretrain', 'mmcv.ops', 'torchvision'):
        importlib.import_module(name)
    from mmcv.ops import nms, roi_align  # the compiled ops mmdet needs
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    out = roi_align(torch.arange(16.).view(1, 1, 4, 4), torch.tensor([[0., 0., 0., 4., 4.]]), (2, 2),
                    1.0, 1, 'avg', True)
    assert out.shape == (1, 1, 2, 2)


@pytest.mark.parametrize('case', list(CASES))
def test_upstream_train_step(case):
    scope, task, path = CASES[case]
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    size = (64, 96) if task == 'det' else (64, 64)
    cfg = offline_model_config(f'{scope}::{path}', num_classes=5, input_size=size)
    torch.manual_seed(0)
    model = registry.build(cfg)
    model.train()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    log_vars = model.train_step(fake_batch(task, 2, size, num_classes=5), optim_wrapper)
    assert 'loss' in log_vars and torch.isfinite(log_vars['loss'])
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert any(k.startswith('backbone.') for k in changed), 'the optimizer step did not move the backbone'
