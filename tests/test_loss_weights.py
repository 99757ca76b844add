"""A negative or non-finite loss weight is a build-time error naming the distill entry."""
import copy

import pytest
from mmengine.registry import init_default_scope

import tat_mm  # noqa: F401
from distill_cases import cls_distiller
from tat_mm.distill.base_distiller import DistillPair, check_loss_weights


@pytest.fixture(scope='module')
def base_cfg(tmp_path_factory):
    return cls_distiller(tmp_path_factory.mktemp('weights'))


def build(cfg):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    return MODELS.build(cfg)


@pytest.mark.parametrize('weight', [-1.0, float('nan'), float('inf'), -float('inf')])
def test_bad_loss_weight_is_a_build_error(base_cfg, weight):
    cfg = copy.deepcopy(base_cfg)
    cfg['distill'][0]['losses'][0]['loss_weight'] = weight  # TaTLoss on backbone.layer4
    with pytest.raises(ValueError) as info:
        build(cfg)
    message = str(info.value)
    assert "TaTLoss in the distill entry 'backbone.layer4' -> 'backbone.layer4'" in message
    assert f'loss_weight={weight!r}' in message and 'Set it to a value >= 0' in message


def test_nested_and_other_weights_are_checked(base_cfg):
    cfg = copy.deepcopy(base_cfg)
    # DAMDistillLoss's wrapped feature loss, and its own dam_loss_weight.
    cfg['distill'][0]['losses'][1]['feature_loss']['loss_weight'] = -0.5
    with pytest.raises(ValueError, match=r"DAMDistillLoss in the distill entry .*"
                                         r"feature_loss.loss_weight=-0.5"):
        build(cfg)
    with pytest.raises(ValueError, match=r'HierarchicalTaTLoss .*anchor_weight=-1'):
        DistillPair('s', 't', [dict(type='HierarchicalTaTLoss', student_channels=8,
                                    teacher_channels=8, pool_size=2, anchor_weight=-1)])
    with pytest.raises(ValueError, match=r"KDLoss .*loss_weight='0.1' is not a number"):
        check_loss_weights(dict(type='KDLoss', loss_weight='0.1'), 'here')


def test_zero_and_positive_weights_build(base_cfg):
    cfg = copy.deepcopy(base_cfg)
    cfg['distill'][0]['losses'][0]['loss_weight'] = 0  # a term switched off is fine
    cfg['distill'][1]['losses'][0]['loss_weight'] = 2
    distiller = build(cfg)
    assert distiller.pairs[0].losses[0].loss_weight == 0
