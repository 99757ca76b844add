"""The teacher gets its own preprocessing, re-made from the student's batch.

Reference: the teacher's own mmdet / mmseg / mmpretrain data preprocessor run on the raw images.
Cases: a caffe-style teacher (BGR, std 1, its own means) with a pytorch-style student (RGB, ImageNet
mean / std), images of different sizes (so the canvas has padding), other pad divisors; a real
ATSS student <- FCOS-caffe teacher step; and no work at all when the preprocessors agree.
"""
import copy
import importlib

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope

import tat_mm  # noqa: F401
from distill_cases import NUM_CLASSES, cls_distiller
from tat_mm.distill.preprocessing import build_teacher_preprocessing
from tat_mm.testing import offline_model_config, save_random_checkpoint

PYTORCH_STYLE = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
CAFFE_STYLE = dict(mean=[102.9801, 115.9465, 122.7717], std=[1.0, 1.0, 1.0])
SIZES = [(40, 52), (56, 30)]  # two images: the batch canvas pads both


def raw_batch(task: str, sizes=SIZES, seed: int = 0) -> dict:
    """Raw uint8 images of different sizes with their data samples, as a dataloader yields them."""
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for h, w in sizes:
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen))
        meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0))
        if task == 'det':
            from mmdet.structures import DetDataSample
            from mmengine.structures import InstanceData
            sample = DetDataSample(metainfo=meta)
            sample.gt_instances = InstanceData(bboxes=torch.tensor([[2.0, 3.0, 20.0, 25.0]]),
                                               labels=torch.tensor([1]))
        elif task == 'seg':
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
            sample.gt_sem_seg = PixelData(data=torch.zeros(1, h, w, dtype=torch.long))
        else:
            from mmpretrain.structures import DataSample
            sample = DataSample(metainfo=meta).set_gt_label(1)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def preprocessor(task: str, style: dict, **kwargs):
    scope, cfg = {
        'det': ('mmdet', dict(type='DetDataPreprocessor', pad_size_divisor=32)),
        'seg': ('mmseg', dict(type='SegDataPreProcessor', size=(64, 64))),
        'cls': ('mmpretrain', dict(type='ClsDataPreprocessor')),
    }[task]
    cfg.update(style, **kwargs)
    with DefaultScope.overwrite_default_scope(scope):
        return importlib.import_module(f'{scope}.registry').MODELS.build(cfg)


def rgb(task):  # each library names "convert the loaded BGR image to RGB" its own way
    return dict(to_rgb=True) if task == 'cls' else dict(bgr_to_rgb=True)


CASES = [
    # task, student kwargs, teacher kwargs
    ('det', dict(PYTORCH_STYLE, **rgb('det')), CAFFE_STYLE),
    ('det', dict(PYTORCH_STYLE, **rgb('det')), dict(CAFFE_STYLE, pad_size_divisor=64)),
    ('det', CAFFE_STYLE, dict(PYTORCH_STYLE, **rgb('det'), pad_value=1.5)),
    ('seg', dict(PYTORCH_STYLE, **rgb('seg')), CAFFE_STYLE),
    ('seg', dict(PYTORCH_STYLE, **rgb('seg'), pad_val=0), dict(PYTORCH_STYLE, pad_val=255)),
    ('cls', dict(PYTORCH_STYLE, **rgb('cls')), CAFFE_STYLE),
    ('cls', dict(mean=[127.5] * 3, std=[127.5] * 3), dict(PYTORCH_STYLE, **rgb('cls'))),
]


@pytest.mark.parametrize('task,student_kwargs,teacher_kwargs', CASES)
def test_renormalised_batch_is_the_teachers_own(task, student_kwargs, teacher_kwargs):
    student_pre = preprocessor(task, student_kwargs)
    teacher_pre = preprocessor(task, teacher_kwargs)
    batch = raw_batch(task)
    student = student_pre(copy.deepcopy(batch), True)
    expected = teacher_pre(copy.deepcopy(batch), True)['inputs']
    student_inputs = student['inputs'].clone()
    to_teacher = build_teacher_preprocessing(student_pre, teacher_pre)
    assert to_teacher is not None
    ours = to_teacher(student['inputs'], student['data_samples'])
    assert ours.shape == expected.shape
    assert torch.allclose(ours, expected, atol=1e-3, rtol=1e-5), (ours - expected).abs().max()
    assert torch.equal(student['inputs'], student_inputs), "the student's batch was changed"


def test_student_canvas_larger_than_the_teachers():
    """Student pads to 64, teacher to 32: the teacher sees the student's canvas (its maps line up
    with the student's); inside the teacher's own canvas it is exactly the teacher's input, the
    rest is the teacher's padding."""
    student_pre = preprocessor('det', dict(PYTORCH_STYLE, bgr_to_rgb=True, pad_size_divisor=64))
    teacher_pre = preprocessor('det', CAFFE_STYLE)
    batch = raw_batch('det', sizes=[(40, 70), (30, 50)])
    student = student_pre(copy.deepcopy(batch), True)
    expected = teacher_pre(copy.deepcopy(batch), True)['inputs']
    ours = build_teacher_preprocessing(student_pre, teacher_pre)(student['inputs'],
                                                                 student['data_samples'])
    assert ours.shape == student['inputs'].shape == (2, 3, 64, 128)
    assert expected.shape == (2, 3, 64, 96)
    h, w = expected.shape[-2:]
    assert torch.allclose(ours[..., :h, :w], expected, atol=1e-3)
    outside = torch.ones_like(ours, dtype=torch.bool)
    outside[..., :h, :w] = False
    assert (ours[outside] == 0).all()


def test_same_preprocessing_builds_nothing():
    for task, style in (('det', dict(PYTORCH_STYLE, bgr_to_rgb=True)), ('cls', CAFFE_STYLE)):
        assert build_teacher_preprocessing(preprocessor(task, style), preprocessor(task, style)) is None
    # mmseg's fixed pad size is the crop of the (student's) data: a different one is no reason.
    assert build_teacher_preprocessing(preprocessor('seg', PYTORCH_STYLE, size=(64, 64)),
                                       preprocessor('seg', PYTORCH_STYLE, size=(512, 1024))) is None


def test_unknown_preprocessor_that_differs_is_a_build_error():
    from mmengine.model import BaseDataPreprocessor
    with pytest.raises(ValueError, match=r"teacher's data preprocessor BaseDataPreprocessor is not "
                                         r'one tat_mm can read.*cfg_options=dict\(data_preprocessor'):
        build_teacher_preprocessing(preprocessor('det', CAFFE_STYLE), BaseDataPreprocessor())
    assert build_teacher_preprocessing(BaseDataPreprocessor(), BaseDataPreprocessor()) is None


def test_atss_student_with_fcos_caffe_teacher(tmp_path):
    """A real pair: the teacher's backbone receives what FCOS-caffe's own preprocessor makes of
    the raw images (BGR, caffe means, std 1), and a train step runs."""
    from mmdet.registry import MODELS
    student = offline_model_config('mmdet::atss/atss_r50_fpn_1x_coco.py', NUM_CLASSES)
    student.merge(dict(backbone=dict(depth=18), neck=dict(in_channels=[64, 128, 256, 512])))
    teacher = offline_model_config('mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py', NUM_CLASSES)
    assert teacher.data_preprocessor.std == [1.0, 1.0, 1.0]
    assert not teacher.data_preprocessor.bgr_to_rgb and student.data_preprocessor.bgr_to_rgb
    cfg = dict(type='DetDistiller', student=student,
               teacher=dict(config=teacher, checkpoint=save_random_checkpoint(
                   'mmdet', teacher, tmp_path / 'fcos.pth')),
               distill=[dict(student='neck', teacher='neck', index=[0, 1],
                             losses=[dict(type='FitNetLoss', student_channels=256,
                                          teacher_channels=256)])])
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg)
    assert model.teacher_preprocessing is not None
    seen = {}
    model.teacher.backbone.register_forward_pre_hook(
        lambda module, args: seen.__setitem__('teacher', args[0].detach().clone()))
    batch = raw_batch('det', sizes=[(60, 90), (64, 70)])
    expected = model.teacher.data_preprocessor(copy.deepcopy(batch), True)['inputs']
    model.train()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    log_vars = model.train_step(copy.deepcopy(batch), optim_wrapper)
    assert seen['teacher'].shape == expected.shape == (2, 3, 64, 96)
    assert torch.allclose(seen['teacher'], expected, atol=1e-3)
    assert {'loss_fitnet.neck.0', 'loss_fitnet.neck.1'} <= set(log_vars)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in log_vars.values())


def test_matching_preprocessors_cost_nothing(tmp_path):
    """Same preprocessing (also: a teacher config without one gets the student's): nothing is
    built and the teacher's backbone receives the student's batch tensor itself, not a copy."""
    from mmpretrain.registry import MODELS
    from tat_mm.testing import fake_batch
    cfg = cls_distiller(tmp_path)
    cfg['teacher']['config'] = copy.deepcopy(cfg['teacher']['config'])
    cfg['teacher']['config'].pop('data_preprocessor')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg)
    assert model.teacher_preprocessing is None
    assert torch.equal(model.teacher.data_preprocessor.mean, model.data_preprocessor.mean)
    seen = {}
    for role in ('student', 'teacher'):
        getattr(model, role).backbone.register_forward_pre_hook(
            lambda module, args, role=role: seen.__setitem__(role, args[0]))
    data = model.data_preprocessor(fake_batch('cls', 2, (64, 64), NUM_CLASSES), True)
    model(**data, mode='loss')
    assert seen['teacher'] is seen['student'] is data['inputs']
