"""A pretrained student: `load_from` of a plain model checkpoint loads into the distiller's
student, strictly (it used to load nothing, silently); distiller checkpoints load as before."""
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import tat_mm  # noqa: F401
from distill_cases import CLS_STUDENT, CLS_TEACHER, cls_runner_config, save_checkpoint
from tat_mm.testing import offline_model_config, save_random_checkpoint


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
    """The distillers' teacher checkpoint, made once (random weights, BN calibrated)."""
    return save_checkpoint('mmpretrain', offline_model_config(CLS_STUDENT, 10),
                           tmp_path_factory.mktemp('teacher') / 'r18_teacher.pth')


def plain_checkpoint(tmp_path, name='student.pth', config=CLS_STUDENT, num_classes=10, seed=3):
    """A checkpoint of the plain mmpretrain model (keys without `student.`), random weights."""
    model = offline_model_config(config, num_classes)
    model.merge(dict(backbone=dict(norm_eval=True)))
    return save_random_checkpoint('mmpretrain', model, tmp_path / name, seed=seed)


def weights(state: dict) -> dict:
    """Conv / linear weights only (BN running statistics change in a train step)."""
    return {k: v for k, v in state.items() if k.endswith('weight') and v.dim() > 1}


def build_runner(tmp_path, teacher, name, **overrides):
    cfg = cls_runner_config(tmp_path, tmp_path / name, max_iters=1, teacher_ckpt=teacher)
    cfg.update(overrides)
    return Runner.from_cfg(Config(dict(cfg, experiment_name=name)))


def test_load_from_plain_student_checkpoint_trains_from_it(tmp_path, teacher):
    ckpt = plain_checkpoint(tmp_path)
    expected = weights(torch.load(ckpt, weights_only=True)['state_dict'])
    # lr 0: the one real train step leaves the loaded weights as they are.
    runner = build_runner(tmp_path, teacher, 'plain', load_from=ckpt,
                          optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)))
    runner.train()
    student = weights(runner.model.student.state_dict())
    assert set(student) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(student[key], value, msg=key)


def test_the_student_really_changed(tmp_path, teacher):
    """The check above can fail: without load_from the student keeps its own initialisation."""
    ckpt = plain_checkpoint(tmp_path)
    expected = weights(torch.load(ckpt, weights_only=True)['state_dict'])
    runner = build_runner(tmp_path, teacher, 'none', optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)))
    runner.train()
    student = weights(runner.model.student.state_dict())
    assert not torch.equal(student['backbone.conv1.weight'], expected['backbone.conv1.weight'])


@pytest.mark.parametrize('kind', ['other head', 'other architecture', 'truncated'])
def test_a_checkpoint_that_does_not_fit_the_student_is_an_error(tmp_path, teacher, kind):
    if kind == 'other head':
        ckpt = plain_checkpoint(tmp_path, num_classes=5)
        expect = ['of another shape', 'head.fc.weight (5, 512)']
    elif kind == 'other architecture':  # the ResNet-50 teacher's: extra keys, other shapes
        ckpt = plain_checkpoint(tmp_path, config=CLS_TEACHER)
        expect = ['not in the student: backbone.layer1.0.conv3.weight', 'of another shape',
                  "init_cfg=dict(type='Pretrained'"]
    else:  # the head's weights are not in the file
        ckpt = plain_checkpoint(tmp_path)
        state = torch.load(ckpt, weights_only=True)
        state['state_dict'] = {k: v for k, v in state['state_dict'].items()
                               if not k.startswith('head.')}
        torch.save(state, ckpt)
        expect = ['missing from the file: head.fc.weight, head.fc.bias']
    runner = build_runner(tmp_path, teacher, 'bad', load_from=ckpt)
    with pytest.raises(ValueError) as err:
        runner.train()
    for text in expect:
        assert text in str(err.value)


def test_distiller_checkpoint_as_load_from_still_loads_everything(tmp_path, teacher):
    """A distiller checkpoint (student.* and pairs.* keys) loads as it always did."""
    first = build_runner(tmp_path, teacher, 'first')
    first.train()
    saved = torch.load(tmp_path / 'first' / 'iter_1.pth', weights_only=False)['state_dict']
    assert any(k.startswith('student.') for k in saved)
    second = build_runner(tmp_path, teacher, 'second', load_from=str(tmp_path / 'first' / 'iter_1.pth'))
    second.load_checkpoint(str(tmp_path / 'first' / 'iter_1.pth'))
    for key, value in second.model.state_dict().items():
        torch.testing.assert_close(value, saved[key], msg=key)


def test_student_init_cfg_pretrained_loads_the_plain_checkpoint(tmp_path, teacher):
    ckpt = plain_checkpoint(tmp_path)
    expected = weights(torch.load(ckpt, weights_only=True)['state_dict'])
    cfg = cls_runner_config(tmp_path, tmp_path / 'init_cfg', max_iters=1, teacher_ckpt=teacher)
    cfg['model']['student']['init_cfg'] = dict(type='Pretrained', checkpoint=ckpt)
    cfg['optim_wrapper'] = dict(optimizer=dict(type='SGD', lr=0.0))
    runner = Runner.from_cfg(Config(dict(cfg, experiment_name='init_cfg')))
    runner.train()
    student = weights(runner.model.student.state_dict())
    for key, value in expected.items():
        torch.testing.assert_close(student[key], value, msg=key)
