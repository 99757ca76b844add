"""Weights initialised as the runner would before a pass through a freshly built model
(tat_mm.distill.offline_init): DINO's level_embed is uninitialised memory until init_weights()."""
import copy
import math

import torch
from mmdet.registry import MODELS
from mmengine.registry import DefaultScope

import tat_mm  # noqa: F401
from tat_mm.distill.offline_init import init_weights_offline, initialised_for_a_pass
from tat_mm.distill.tap_inspection import check_distill_taps
from tat_mm.testing import offline_model_config, save_random_checkpoint

DINO = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
SIZE = (64, 96)
# A small DINO: R18, two encoder and two decoder layers, 100 queries (top-k of the 128 memory
# tokens of a 64x96 image).
SMALL_DINO = dict(num_queries=100, backbone=dict(depth=18), neck=dict(in_channels=[128, 256, 512]),
                  encoder=dict(num_layers=2), decoder=dict(num_layers=2))


def small_dino_config():
    cfg = offline_model_config(DINO, 5)
    cfg.merge(SMALL_DINO)
    return cfg


def build(cfg):
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(copy.deepcopy(cfg))


def test_init_weights_offline_initialises_and_drops_pretrained_inits():
    """The upstream config's backbone init is Pretrained torchvision://resnet50 (a download): it is
    dropped, the rest of init_weights() runs (level_embed ~ N(0, 1))."""
    cfg = offline_model_config(DINO, 5)
    cfg.backbone.init_cfg = dict(type='Pretrained', checkpoint='torchvision://resnet50')
    cfg.merge(SMALL_DINO)
    model = build(cfg)
    assert model.backbone.init_cfg['type'] == 'Pretrained' and not model._is_init
    torch.manual_seed(0)
    init_weights_offline(model)  # no network here: a download attempt would fail
    assert model.backbone.init_cfg is None and model._is_init
    embed = model.level_embed.detach()
    assert torch.isfinite(embed).all() and 0.8 < embed.std().item() < 1.2


def test_initialised_for_a_pass_puts_everything_back():
    model = build(small_dino_config())
    with torch.no_grad():
        model.level_embed.fill_(math.nan)  # what uninitialised memory may hold
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    with initialised_for_a_pass(model):
        assert torch.isfinite(model.level_embed).all() and model._is_init
    assert not model._is_init and torch.isnan(model.level_embed).all()
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) or (v.isnan().all() and after[k].isnan().all())
               for k, v in before.items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_validate_taps_check_passes_on_an_uninitialised_dino_student(tmp_path):
    """check_distill_taps (validate_taps=True, tools/inspect_taps.py --check) runs before the
    runner initialises the student: a NaN level_embed must not fail it, and stays as it was."""
    teacher = small_dino_config()
    distiller = dict(
        type='DetDistiller', student=small_dino_config(),
        teacher=dict(config=teacher, checkpoint=save_random_checkpoint(
            'mmdet', teacher, tmp_path / 'teacher.pth', init_weights=True)),
        distill=[dict(student='neck', teacher='neck', index=[0, 1],
                      losses=[dict(type='FitNetLoss', student_channels=256,
                                   teacher_channels=256)])])
    model = build(distiller)
    # The teacher checkpoint came from an initialised model (init_weights=True).
    assert torch.isfinite(model.teacher.level_embed).all()
    with torch.no_grad():
        model.student.level_embed.fill_(math.nan)
    assert check_distill_taps(model, SIZE) == []
    assert torch.isnan(model.student.level_embed).all() and not model.student._is_init


def test_initialised_for_a_pass_leaves_an_initialised_model_alone():
    model = init_weights_offline(build(small_dino_config()))
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    with initialised_for_a_pass(model):
        assert torch.equal(torch.get_rng_state(), rng)  # no init_weights() ran
    assert model._is_init
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
