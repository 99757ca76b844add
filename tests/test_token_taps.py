"""Token taps: transformer (B, N, C) tokens distilled as (B, C, h, w) maps.

A real mmpretrain ViT pair (tiny archs, 32x32 images) trains a step with TaT on token taps; the map
the loss sees is checked against the tokens folded by hand; the shipped ViT-B -> DeiT-tiny config
trains a step; bad taps give errors that say what to change.
"""
import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope

import tat_mm  # noqa: F401
from tat_mm.distill.token_to_map import TokensToMap, split_tokens_option
from tat_mm.testing import fake_batch, offline_model_config, save_random_checkpoint

NUM_CLASSES = 5
CONFIG_ROOT = Path(__file__).resolve().parents[1] / 'configs'
PREPROCESSOR = dict(type='ClsDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True,
                    num_classes=NUM_CLASSES)


def tiny_vit(embed_dims: int, distilled: bool = False) -> dict:
    """A 2-layer mmpretrain ViT on 32x32 images with 8x8 patches: a 4x4 grid of patch tokens.

    The distilled one (DeiT's backbone) has 2 extra tokens (class + distillation), the other 1.
    """
    backbone = dict(
        type='DistilledVisionTransformer' if distilled else 'VisionTransformer',
        arch=dict(embed_dims=embed_dims, num_layers=2, num_heads=2,
                  feedforward_channels=2 * embed_dims),
        img_size=32, patch_size=8)
    if distilled:  # pooled patch tokens + a linear head
        backbone['out_type'] = 'avg_featmap'
        head = dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=embed_dims,
                    loss=dict(type='CrossEntropyLoss'))
    else:  # class token + the ViT head
        head = dict(type='VisionTransformerClsHead', num_classes=NUM_CLASSES, in_channels=embed_dims,
                    loss=dict(type='CrossEntropyLoss'))
    return dict(type='ImageClassifier', backbone=backbone, neck=None, head=head,
                data_preprocessor=copy.deepcopy(PREPROCESSOR))


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
    cfg = tiny_vit(48)
    path = save_random_checkpoint('mmpretrain', cfg, tmp_path_factory.mktemp('vit') / 'vit.pth', seed=1)
    return dict(config=cfg, checkpoint=path)


def distiller_cfg(teacher, distill) -> dict:
    return dict(type='ClsDistiller', student=tiny_vit(32, distilled=True), teacher=teacher,
                distill=distill)


def build(cfg):
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(cfg)


def train_step(model, size=(32, 32)):
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    return model.train_step(fake_batch('cls', 2, size, NUM_CLASSES), optim_wrapper)


def fold_by_hand(tokens: torch.Tensor, extra: int, h: int, w: int) -> torch.Tensor:
    """(B, N, C) -> (B, C, h, w) with explicit loops: patch token extra + i * w + j is pixel (i, j)."""
    batch, _, channels = tokens.shape
    out = torch.empty(batch, channels, h, w, dtype=tokens.dtype)
    for b in range(batch):
        for i in range(h):
            for j in range(w):
                out[b, :, i, j] = tokens[b, extra + i * w + j]
    return out


def test_tokens_to_map_matches_loops():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    tokens = torch.randn(2, 3 + 2 * 5, 4)
    to_map = TokensToMap(model, '0', grid=(2, 5), num_extra_tokens=3)
    assert torch.equal(to_map(tokens), fold_by_hand(tokens, 3, 2, 5))
    with pytest.raises(ValueError, match=r'13 tokens, but 3 extra tokens \+ a 3x3 patch grid make 12'):
        TokensToMap(model, '0', grid=(3, 3), num_extra_tokens=3)(tokens)
    # No transformer on the path and no layout given: an error at build time.
    with pytest.raises(ValueError, match='num_extra_tokens'):
        TokensToMap(model, '0')


def test_tokens_option_forms():
    assert split_tokens_option(True) == ({}, {})
    assert split_tokens_option(None) == (None, None)
    assert split_tokens_option(dict(student=True)) == ({}, None)
    assert split_tokens_option(dict(grid=(2, 2))) == ({'grid': (2, 2)}, {'grid': (2, 2)})
    assert split_tokens_option(dict(student=dict(num_extra_tokens=2), teacher=True)) == (
        {'num_extra_tokens': 2}, {})
    with pytest.raises(ValueError, match='expected True, None or dict'):
        split_tokens_option(dict(student='yes'))
    with pytest.raises(ValueError, match='not both'):
        split_tokens_option(dict(student=True, grid=(2, 2)))


def test_vit_pair_trains_on_token_maps(teacher):
    """DeiT-like student (class + distillation token) <- ViT teacher (class token), TaT + KD."""
    model = build(distiller_cfg(teacher, [
        dict(student='backbone.layers.1', teacher='backbone.layers.1', tokens=True,
             losses=[dict(type='TaTLoss', student_channels=32, teacher_channels=48)]),
        dict(student='head.fc', teacher='head.layers.head', losses=[dict(type='KDLoss')]),
    ]))
    s_tap, t_tap = model.student_taps.taps[0], model.teacher_taps.taps[0]
    assert (s_tap.to_map.num_extra_tokens, t_tap.to_map.num_extra_tokens) == (2, 1)

    # The map the losses see is the tokens folded by hand (layout read from each model).
    raw = {}
    hooks = [m.backbone.layers[1].register_forward_hook(
        lambda mod, args, out, key=key: raw.__setitem__(key, out.detach()))
        for key, m in (('student', model.student), ('teacher', model.teacher))]
    data = model.data_preprocessor(fake_batch('cls', 2, (32, 32), NUM_CLASSES), True)
    student_maps, teacher_maps = model.tapped_features(data['inputs'], data['data_samples'])
    for hook in hooks:
        hook.remove()
    assert raw['student'].shape == (2, 2 + 16, 32) and raw['teacher'].shape == (2, 1 + 16, 48)
    assert torch.equal(student_maps['backbone.layers.1'], fold_by_hand(raw['student'], 2, 4, 4))
    assert torch.equal(teacher_maps['backbone.layers.1'], fold_by_hand(raw['teacher'], 1, 4, 4))

    # One real train step: finite terms, and the TaT term reaches the student's transformer.
    model.train()
    before = model.student.backbone.layers[0].attn.qkv.weight.detach().clone()
    log_vars = train_step(model)
    assert {'loss_tat.backbone.layers.1', 'loss_kd.head.fc', 'loss_cls'} <= set(log_vars)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())
    assert not torch.equal(before, model.student.backbone.layers[0].attn.qkv.weight)

    # Another input size: the grid comes from this pass's patch embedding (6x6 at 48x48).
    log_vars = train_step(model, (48, 48))
    assert torch.isfinite(log_vars['loss_tat.backbone.layers.1'])


def test_token_map_gradient_reaches_the_patch_tokens_only():
    """A loss on the map sends its gradient to the patch tokens, unfolded; the class and
    distillation tokens (read from the DeiT-like backbone: 2) get none."""
    student = build(tiny_vit(32, distilled=True))
    to_map = TokensToMap(student, 'backbone.layers.1', grid=(4, 4))
    assert to_map.num_extra_tokens == 2
    tokens = torch.randn(2, 18, 32, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 32, 4, 4, dtype=torch.float64)
    ((to_map(tokens) - target)**2).sum().backward()
    expected = torch.zeros_like(tokens)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                expected[b, 2 + i * 4 + j] = 2 * (tokens[b, 2 + i * 4 + j] - target[b, :, i, j])
    assert torch.allclose(tokens.grad, expected)


def test_explicit_layout_overrides_the_model(teacher):
    model = build(distiller_cfg(teacher, [
        dict(student='backbone.layers.1', teacher='backbone.layers.1',
             tokens=dict(student=dict(grid=(4, 4), num_extra_tokens=2),
                         teacher=dict(num_extra_tokens=1)),
             losses=[dict(type='FitNetLoss', student_channels=32, teacher_channels=48)])]))
    model.train()
    assert torch.isfinite(train_step(model)['loss_fitnet.backbone.layers.1'])
    # A wrong explicit layout is an error naming the tap and the numbers.
    model = build(distiller_cfg(teacher, [
        dict(student='backbone.layers.1', teacher='backbone.layers.1',
             tokens=dict(student=dict(num_extra_tokens=1), teacher=True),
             losses=[dict(type='FitNetLoss', student_channels=32, teacher_channels=48)])]))
    with pytest.raises(ValueError, match=r"student tap 'backbone.layers.1' gives 18 tokens, but 1 "
                                         r'extra tokens \+ a 4x4 patch grid make 17'):
        train_step(model)


def test_token_errors_say_what_to_change(teacher):
    # Tokens without `tokens`: the loss error says to set it.
    model = build(distiller_cfg(teacher, [
        dict(student='backbone.layers.1', teacher='backbone.layers.1',
             losses=[dict(type='TaTLoss', student_channels=32, teacher_channels=48)])]))
    with pytest.raises(ValueError, match=r'expected 4D.*\(B, N, C\) transformer tokens: set '
                                         r'tokens=True in this distill entry'):
        train_step(model)
    # A pooled (B, C) output with `tokens` (the DeiT-like student's average of its patch tokens):
    # names the tap and an earlier module.
    model = build(distiller_cfg(teacher, [
        dict(student='backbone.ln2', teacher='backbone.layers.1', tokens=True,
             losses=[dict(type='TaTLoss', student_channels=32, teacher_channels=48)])]))
    with pytest.raises(ValueError, match=r"student tap 'backbone.ln2' gives \(2, 32\): pooled \(B, C\) "
                                         r".*e.g. 'backbone.layers.1'"):
        train_step(model)
    # The same without `tokens`: both sides named, with what to change on each.
    model = build(distiller_cfg(teacher, [
        dict(student='backbone.ln2', teacher='backbone.layers.1',
             losses=[dict(type='TaTLoss', student_channels=32, teacher_channels=48)])]))
    with pytest.raises(ValueError, match=r"(?s)student 'backbone.ln2' gives \(2, 32\), pooled.*"
                                         r"teacher 'backbone.layers.1' gives \(2, 17, 48\), tokens.*"
                                         r"student tap 'backbone.ln2' is already pooled.*teacher tap "
                                         r"'backbone.layers.1' gives transformer tokens"):
        train_step(model)
    # `tokens` on a CNN: nothing says how its output is laid out.
    cfg = distiller_cfg(teacher, [
        dict(student='backbone.layers.1', teacher='backbone.layers.1', tokens=True,
             losses=[dict(type='TaTLoss', student_channels=32, teacher_channels=48)])])
    cfg['student'] = offline_model_config('mmpretrain::resnet/resnet18_8xb32_in1k.py', NUM_CLASSES)
    cfg['distill'][0]['student'] = 'backbone.layer4'
    with pytest.raises(ValueError, match=r"student tap 'backbone.layer4': cannot tell how many "
                                         r'extra .*tokens=dict\(num_extra_tokens'):
        build(cfg)


def test_shipped_vit_to_deit_config_trains(tmp_path):
    """configs/cls/vit-base_to_deit-tiny_in1k_tat.py: builds offline and trains a step (64x64)."""
    cfg = Config.fromfile(str(CONFIG_ROOT / 'cls/vit-base_to_deit-tiny_in1k_tat.py'))
    model_cfg = copy.deepcopy(cfg.model)
    assert model_cfg.distill[0].tokens is True
    teacher_cfg = offline_model_config(model_cfg.teacher.config)
    model_cfg.teacher = dict(config=teacher_cfg, checkpoint=save_random_checkpoint(
        'mmpretrain', teacher_cfg, tmp_path / 'vit-b.pth'))
    model_cfg.student = offline_model_config(model_cfg.student)
    model_cfg.data_preprocessor = cfg.data_preprocessor
    model = build(model_cfg)
    model.train()
    log_vars = train_step(model, (64, 64))  # a 4x4 patch grid; mmpretrain resizes the pos embed
    assert {'loss_tat.backbone.layers.11', 'loss_kd.head.layers.head', 'loss_cls'} <= set(log_vars)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())


# ------------------------------------------------------------------ hierarchical and DETR tokens
SWIN_CLS = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'
SWIN_SEG = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'


def record_output(module, store, key):
    # prepend: before the tap, which stops the teacher once it has recorded
    return module.register_forward_hook(lambda mod, args, out: store.__setitem__(key, out),
                                        prepend=True)


def test_mmpretrain_swin_teacher_stage_tokens_any_input_size(tmp_path):
    """Swin-T (mmpretrain, random weights) -> ResNet-18: the teacher's stage 2 after two patch
    mergings, whose grid is 1/16 of the input, not the patch embedding's 1/4; a CNN student tensor
    with element 0 of the stage's (tokens, hw_shape) tuple. At 64 and 96 px (4x4, 6x6 grids)."""
    from mmpretrain.registry import MODELS
    teacher = offline_model_config(SWIN_CLS, NUM_CLASSES)
    teacher['backbone']['pad_small_map'] = True  # stages 2-3 are smaller than a 7x7 window here
    cfg = dict(type='ClsDistiller', student=offline_model_config(
        'mmpretrain::resnet/resnet18_8xb32_in1k.py', NUM_CLASSES),
        teacher=dict(config=teacher, checkpoint=save_random_checkpoint(
            'mmpretrain', teacher, tmp_path / 'swin.pth', seed=1)),
        distill=[dict(student='backbone.layer3', teacher='backbone.stages.2', index=dict(teacher=0),
                      tokens=dict(teacher=True),
                      losses=[dict(type='FitNetLoss', student_channels=256, teacher_channels=384)])])
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg)
    raw = {}
    handle = record_output(model.teacher.backbone.stages[2], raw, 'stage')
    data = model.data_preprocessor(fake_batch('cls', 2, (64, 64), NUM_CLASSES), True)
    student_maps, teacher_maps = model.tapped_features(data['inputs'], data['data_samples'])
    handle.remove()
    tokens, hw_shape = raw['stage']
    assert tuple(hw_shape) == (4, 4) and tokens.shape == (2, 16, 384)
    assert torch.equal(teacher_maps['backbone.stages.2.0'], fold_by_hand(tokens, 0, 4, 4))
    assert student_maps['backbone.layer3'].shape == (2, 256, 4, 4)
    model.train()
    log_vars = train_step(model, (96, 96))  # 6x6: the grid of this pass, not a fixed one
    assert torch.isfinite(log_vars['loss_fitnet.backbone.layer3'])


def test_mmseg_swin_teacher_stage_tokens(tmp_path):
    """UperNet Swin-T (mmseg, random weights) -> DeepLabV3+ R18 (d8): mmseg's stage returns
    (merged tokens, merged hw, tokens, hw); index 2 is the stride-8 tokens (8x8 at 64 px)."""
    from mmseg.registry import MODELS
    from distill_cases import SEG_STUDENT
    teacher = offline_model_config(SWIN_SEG, NUM_CLASSES, (64, 64))
    cfg = dict(type='SegDistiller', student=offline_model_config(SEG_STUDENT, NUM_CLASSES, (64, 64)),
               teacher=dict(config=teacher, checkpoint=save_random_checkpoint(
                   'mmseg', teacher, tmp_path / 'swin_seg.pth', seed=1)),
               distill=[dict(student='backbone.layer3', teacher='backbone.stages.1',
                             index=dict(teacher=2), tokens=dict(teacher=True),
                             losses=[dict(type='FitNetLoss', student_channels=256,
                                          teacher_channels=192)])])
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg)
    assert model.teacher_mode == 'tensor'
    raw = {}
    handle = record_output(model.teacher.backbone.stages[1], raw, 'stage')
    data = model.data_preprocessor(fake_batch('seg', 2, (64, 64), NUM_CLASSES), True)
    _, teacher_maps = model.tapped_features(data['inputs'], data['data_samples'])
    handle.remove()
    merged, merged_hw, tokens, hw_shape = raw['stage']
    assert (tuple(hw_shape), tuple(merged_hw)) == ((8, 8), (4, 4)) and tokens.shape == (2, 64, 192)
    assert torch.equal(teacher_maps['backbone.stages.1.2'], fold_by_hand(tokens, 0, 8, 8))
    model.train()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    log_vars = model.train_step(fake_batch('seg', 2, (64, 64), NUM_CLASSES), optim_wrapper)
    assert torch.isfinite(log_vars['loss_fitnet.backbone.layer3'])

