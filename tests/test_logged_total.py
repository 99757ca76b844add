"""The logged ``loss`` is the total that is back-propagated, for every task library.

MMEngine's ``parse_losses`` logs the sum of every ``*loss*`` term as ``loss``; mmpretrain names its
classification loss ``loss``, which overwrote that total in the logs (the distillation terms were
left out). The distiller logs the student's bare ``loss`` as ``loss_cls``.
"""
import importlib

import pytest
import torch
from mmengine.registry import DefaultScope

import tat_mm  # noqa: F401
from distill_cases import (CLS_STUDENT, NUM_CLASSES, R18_FPN, RETINA_TEACHER, SEG_STUDENT, SIZES)
from tat_mm.testing import fake_batch, offline_model_config, save_random_checkpoint


def small_pair(task: str, tmp_path) -> tuple:
    """(scope, distiller config): an R18 model of the library distilled from another R18 (the
    logged total does not depend on the teacher's size), a feature term and, for cls, logit KD."""
    if task == 'cls':
        scope, model = 'mmpretrain', offline_model_config(CLS_STUDENT, NUM_CLASSES)
        distill = [dict(student='backbone.layer4', teacher='backbone.layer4',
                        losses=[dict(type='TaTLoss', student_channels=512, teacher_channels=512)]),
                   dict(student='head.fc', teacher='head.fc', losses=[dict(type='KDLoss')])]
    elif task == 'seg':
        scope, model = 'mmseg', offline_model_config(SEG_STUDENT, NUM_CLASSES, SIZES['seg'])
        distill = [dict(student='decode_head.sep_bottleneck', teacher='decode_head.sep_bottleneck',
                        losses=[dict(type='FitNetLoss', student_channels=128,
                                     teacher_channels=128)])]
    else:
        scope, model = 'mmdet', offline_model_config(RETINA_TEACHER, NUM_CLASSES)
        model.merge(R18_FPN)
        distill = [dict(student='neck', teacher='neck', index=[0, 1],
                        losses=[dict(type='FitNetLoss', student_channels=256,
                                     teacher_channels=256)])]
    distiller = {'cls': 'ClsDistiller', 'seg': 'SegDistiller', 'det': 'DetDistiller'}[task]
    checkpoint = save_random_checkpoint(scope, model, tmp_path / 'teacher.pth', seed=1)
    return scope, dict(type=distiller, student=model, distill=distill,
                       teacher=dict(config=model, checkpoint=checkpoint))


@pytest.mark.parametrize('task', ['cls', 'seg', 'det'])
def test_logged_loss_is_the_optimised_total(task, tmp_path):
    scope, cfg = small_pair(task, tmp_path)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg)
    model.train()
    torch.manual_seed(0)
    data = model.data_preprocessor(fake_batch(task, 2, SIZES[task], NUM_CLASSES), True)
    losses = model(**data, mode='loss')
    assert 'loss' not in losses, 'a term named `loss` overwrites the logged total'
    total, log_vars = model.parse_losses(losses)

    # The sum of every term, written out: tensors and lists of tensors (mmdet's per-level terms).
    expected = 0.0
    for key, value in losses.items():
        if 'loss' in key:
            values = value if isinstance(value, (list, tuple)) else [value]
            expected = expected + sum(v.mean() for v in values)
    distill_terms = [k for k in losses if k.startswith('loss_') and '.' in k]
    assert distill_terms and any(k not in distill_terms for k in losses if 'loss' in k)
    assert torch.allclose(total, expected)
    assert torch.allclose(log_vars['loss'], expected)
    assert log_vars['loss'].item() > sum(log_vars[k].item() for k in distill_terms)

    if task == 'cls':
        # mmpretrain's `loss` is logged as `loss_cls`, with the value the student alone gives.
        with torch.no_grad():
            student_losses = model.student.loss(data['inputs'], data['data_samples'])
        assert set(student_losses) == {'loss'}
        assert torch.allclose(log_vars['loss_cls'], student_losses['loss'])
