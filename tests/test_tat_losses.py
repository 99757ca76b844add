"""TaT, patch-group and anchor-point losses against naive references written with explicit loops and
explicit N x N softmax matrices (float64, CPU)."""
import copy
import math

import pytest
import torch

from tat_reference import (DT, embed, naive_avg_pool, naive_softmax_attention, ref_anchor_maps,
                           ref_patch_group_maps, ref_tat_maps)

from tat_mm.losses import (AnchorPointTaTLoss, PatchGroupTaTLoss, TaTLoss, build_tat_embedding,
                           tat_attention)


# ----------------------------------------------------------------------------------------------------
# Naive references (tests/tat_reference.py) applied to a loss module's embeddings
# ----------------------------------------------------------------------------------------------------
def ref_tat(mod, s, t, weight=None, transposed=False):
    return ref_tat_maps(*embed(mod, s, t), t, weight, transposed)


def ref_patch_group(mod, s, t, weight=None, patch=None, per_side=None, group=1):
    return ref_patch_group_maps(*embed(mod, s, t), t, weight, patch, per_side, group)


def ref_anchor(mod, s, t, weight=None, pool=2):
    return ref_anchor_maps(*embed(mod, s, t), t, weight, pool)


# ----------------------------------------------------------------------------------------------------
# Comparison harness: values and gradients (student features and embedding parameters)
# ----------------------------------------------------------------------------------------------------
def make_inputs(b=2, cs=3, ct=4, h=6, w=5, weight=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, cs, h, w, dtype=DT, generator=g)
    t = torch.randn(b, ct, h, w, dtype=DT, generator=g)
    if weight == 'random':
        weight = torch.rand(b, 1, h, w, dtype=DT, generator=g)
        weight[0, 0, 0, :] = 0.0  # some exact zeros
    elif weight == 'ones':
        weight = torch.ones(b, 1, h, w, dtype=DT)
    elif weight == 'zeros':
        weight = torch.zeros(b, 1, h, w, dtype=DT)
    return s, t, weight


def randomise_bn(mod, seed=1):
    """Give BN affine parameters non-trivial values so their gradients are tested too."""
    g = torch.Generator().manual_seed(seed)
    for m in mod.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = 0.5 + torch.rand(m.weight.shape, dtype=DT, generator=g)
            m.bias.data = 0.1 * torch.randn(m.bias.shape, dtype=DT, generator=g)
    return mod


def check_against_reference(mod, ref_fn, s, t, weight, loss_weight=1.0):
    mod = randomise_bn(mod.double())
    ref_mod = copy.deepcopy(mod)
    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    t1 = t.clone().requires_grad_(True)
    out = mod(s1, t1, weight)
    ref = ref_fn(ref_mod, s2, t, weight) * loss_weight
    assert out.dtype == DT and out.dim() == 0
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-12)
    out.backward()
    ref.backward()
    assert t1.grad is None  # teacher detached
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-8, atol=1e-12)
    params = dict(mod.named_parameters())
    ref_params = dict(ref_mod.named_parameters())
    for name, p in params.items():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-8, atol=1e-12, msg=name)
    return out


# ----------------------------------------------------------------------------------------------------
# tat_attention and embeddings
# ----------------------------------------------------------------------------------------------------
def test_tat_attention_matches_explicit_matrix_with_and_without_mask():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, n, 5, dtype=DT, generator=g) for n in (7, 9, 9))
    out = tat_attention(q, k, v)
    for b in range(3):
        torch.testing.assert_close(out[b], naive_softmax_attention(q[b], k[b], v[b]))
    valid = torch.tensor([True, False, True, True, False, True, True, True, False])
    out = tat_attention(q, k, v, valid[None, None, :])
    for b in range(3):
        torch.testing.assert_close(out[b], naive_softmax_attention(q[b], k[b], v[b], valid))


def test_tat_attention_both_paths_match_explicit_matrix():
    """Nk <= E builds the matrix, Nk > E goes blockwise: both equal the reference, mask included."""
    g = torch.Generator().manual_seed(1)
    for nk, e in ((6, 8), (8, 8), (9, 4)):
        q, k, v = (torch.randn(2, 3, n, e, dtype=DT, generator=g) for n in (5, nk, nk))
        q.requires_grad_(True)
        valid = torch.arange(nk) % 3 != 1
        out = tat_attention(q, k, v, valid.view(1, 1, 1, nk))
        ref = torch.stack([torch.stack([naive_softmax_attention(q[b, h], k[b, h], v[b, h], valid)
                                        for h in range(3)]) for b in range(2)])
        torch.testing.assert_close(out, ref)
        grad, = torch.autograd.grad(out.sum(), q)
        ref_grad, = torch.autograd.grad(ref.sum(), q)
        torch.testing.assert_close(grad, ref_grad)


def test_tat_attention_uses_no_sqrt_scaling():
    q = torch.tensor([[[2.0, 0.0]]], dtype=DT)
    k = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=DT)
    v = torch.tensor([[[1.0], [0.0]]], dtype=DT)
    expected = math.exp(2.0) / (math.exp(2.0) + 1.0)
    torch.testing.assert_close(tat_attention(q, k, v), torch.full((1, 1, 1), expected, dtype=DT))


def test_embedding_builder():
    assert isinstance(build_tat_embedding('identity', 4, 4), torch.nn.Identity)
    conv1 = build_tat_embedding('conv1x1', 3, 5)
    conv3 = build_tat_embedding('conv3x3', 3, 5)
    assert conv1[0].kernel_size == (1, 1) and conv1[0].bias is None
    assert conv3[0].kernel_size == (3, 3) and conv3[0].padding == (1, 1) and conv3[0].bias is None
    assert isinstance(conv1[1], torch.nn.BatchNorm2d) and conv1[1].num_features == 5
    with pytest.raises(ValueError, match="use 'conv1x1' or 'conv3x3'"):
        build_tat_embedding('identity', 3, 5)
    with pytest.raises(ValueError, match='Unknown TaT embedding'):
        build_tat_embedding('linear', 3, 5)


# ----------------------------------------------------------------------------------------------------
# TaTLoss
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('cs,ct,embeds,transposed,weight', [
    (4, 4, ('identity', 'identity', 'identity'), False, None),
    (4, 4, ('identity', 'identity', 'identity'), True, 'random'),
    (3, 5, ('conv3x3', 'identity', 'conv3x3'), False, 'random'),
    (3, 5, ('conv3x3', 'identity', 'conv3x3'), True, None),
    (3, 4, ('conv1x1', 'conv1x1', 'conv3x3'), False, None),
    (3, 4, ('conv1x1', 'conv3x3', 'conv1x1'), True, 'random'),
])
def test_tat_loss_matches_reference(cs, ct, embeds, transposed, weight):
    s, t, w = make_inputs(cs=cs, ct=ct, weight=weight)
    mod = TaTLoss(cs, ct, *embeds, transposed=transposed, loss_weight=0.7)
    check_against_reference(mod, lambda m, s_, t_, w_: ref_tat(m, s_, t_, w_, transposed), s, t, w, 0.7)


def test_tat_loss_defaults_are_authors_classification_choice():
    mod = TaTLoss(3, 5)
    assert mod.query_embed[0].kernel_size == (3, 3) and mod.value_embed[0].kernel_size == (3, 3)
    assert isinstance(mod.key_embed, torch.nn.Identity) and not mod.transposed


def test_transposed_differs_from_eq7():
    s, t, _ = make_inputs(cs=4, ct=4)
    a = TaTLoss(4, 4, 'identity', 'identity', 'identity')(s, t)
    b = TaTLoss(4, 4, 'identity', 'identity', 'identity', transposed=True)(s, t)
    assert not torch.allclose(a, b)


# ----------------------------------------------------------------------------------------------------
# PatchGroupTaTLoss
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('hw,cs,ct,kwargs,weight', [
    ((6, 6), 3, 4, dict(patch_size=3, group_size=4), None),  # divisible, one group of 4
    ((6, 6), 3, 4, dict(patch_size=3, group_size=4), 'random'),
    ((6, 5), 3, 4, dict(patch_size=(2, 2), group_size=1), None),  # W padded, g=1
    ((7, 5), 3, 4, dict(patches_per_side=2, group_size=2), 'random'),  # 3x2 patches, 3x3 grid, group pad
    ((4, 6), 4, 4, dict(patch_size=2, group_size=4, query_embed='identity', key_embed='identity',
                        value_embed='identity'), None),  # 6 patches, 2 empty ones appended
    ((5, 7), 3, 4, dict(patch_size=(3, 4), group_size=3, query_embed='conv3x3'), 'random'),
])
def test_patch_group_loss_matches_reference(hw, cs, ct, kwargs, weight):
    s, t, w = make_inputs(cs=cs, ct=ct, h=hw[0], w=hw[1], weight=weight)
    mod = PatchGroupTaTLoss(cs, ct, loss_weight=1.3, **kwargs)
    ref_kwargs = dict(patch=None if 'patch_size' not in kwargs else
                      ((kwargs['patch_size'],) * 2 if isinstance(kwargs['patch_size'], int) else kwargs['patch_size']),
                      per_side=None if 'patches_per_side' not in kwargs else (kwargs['patches_per_side'],) * 2,
                      group=kwargs['group_size'])
    check_against_reference(mod, lambda m, s_, t_, w_: ref_patch_group(m, s_, t_, w_, **ref_kwargs), s, t, w, 1.3)


def test_patch_group_grid_follows_authors_patch_size():
    mod = PatchGroupTaTLoss(4, 4, patches_per_side=16)
    assert mod.patch_grid(129, 129) == ((8, 8), (17, 17))  # authors' 8x8 patches + 1 padded row/col
    assert mod.patch_grid(128, 64) == ((8, 4), (16, 16))
    assert PatchGroupTaTLoss(4, 4, patch_size=(3, 2)).patch_grid(7, 5) == ((3, 2), (3, 3))


def test_patch_group_patches_are_independent():
    """g=1: adding a row/column of zero-weight pixels (cut into padded border patches) leaves the
    loss of the original patches unchanged: no mixing across patches, border patches excluded."""
    s, t, _ = make_inputs(cs=4, ct=4, h=4, w=4)
    mod = PatchGroupTaTLoss(4, 4, patch_size=2, query_embed='identity', key_embed='identity',
                            value_embed='identity').double()
    full = mod(s, t)
    # A 5x5 map whose extra row/col is given zero weight: its padded patches are excluded from the
    # loss, and the 4x4 patches see exactly what they saw before.
    s5, t5, _ = make_inputs(cs=4, ct=4, h=5, w=5, seed=3)
    s5[:, :, :4, :4], t5[:, :, :4, :4] = s, t
    wt = torch.zeros(2, 1, 5, 5, dtype=DT)
    wt[:, :, :4, :4] = 1.0
    torch.testing.assert_close(mod(s5, t5, wt), full)


# ----------------------------------------------------------------------------------------------------
# AnchorPointTaTLoss
# ----------------------------------------------------------------------------------------------------
def test_naive_pool_matches_partial_windows():
    x = torch.arange(15, dtype=DT).view(1, 1, 3, 5)
    pooled = naive_avg_pool(x, 2)
    assert pooled.shape == (1, 1, 2, 3)
    assert pooled[0, 0, 1, 2].item() == 14.0  # corner window holds only pixel 14
    assert pooled[0, 0, 0, 2].item() == (4.0 + 9.0) / 2


@pytest.mark.parametrize('hw,cs,ct,pool,embeds,weight', [
    ((6, 6), 3, 4, 3, ('conv1x1', 'conv1x1', 'conv1x1'), None),
    ((5, 7), 3, 4, 2, ('conv1x1', 'conv1x1', 'conv1x1'), 'random'),  # not divisible
    ((7, 5), 4, 4, 3, ('identity', 'identity', 'identity'), None),
    ((6, 5), 3, 5, 2, ('conv3x3', 'identity', 'conv3x3'), 'random'),
])
def test_anchor_point_loss_matches_reference(hw, cs, ct, pool, embeds, weight):
    s, t, w = make_inputs(cs=cs, ct=ct, h=hw[0], w=hw[1], weight=weight)
    mod = AnchorPointTaTLoss(cs, ct, pool, *embeds, loss_weight=0.4)
    check_against_reference(mod, lambda m, s_, t_, w_: ref_anchor(m, s_, t_, w_, pool), s, t, w, 0.4)


# ----------------------------------------------------------------------------------------------------
# Shared contract: weights, precision, errors
# ----------------------------------------------------------------------------------------------------
def all_feature_losses(cs=3, ct=4):
    return [
        TaTLoss(cs, ct),
        TaTLoss(cs, ct, transposed=True),
        PatchGroupTaTLoss(cs, ct, patch_size=(4, 2), group_size=2),
        PatchGroupTaTLoss(cs, ct, patches_per_side=2, group_size=3),
        AnchorPointTaTLoss(cs, ct, pool_size=4),
    ]


@pytest.mark.parametrize('idx', range(5))
def test_weight_ones_equals_unweighted_and_zeros_give_zero(idx):
    s, t, ones = make_inputs(h=6, w=5, weight='ones')
    mod = all_feature_losses()[idx].double()
    torch.testing.assert_close(mod(s, t, ones), mod(s, t))
    s = s.requires_grad_(True)
    zero = mod(s, t, torch.zeros_like(ones))
    assert zero.item() == 0.0
    zero.backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize('idx', range(5))
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_fp32_loss(idx, dtype):
    torch.manual_seed(0)
    mod = all_feature_losses()[idx]
    s = torch.randn(2, 3, 6, 5)
    t = torch.randn(2, 4, 6, 5)
    reference = mod(s.to(dtype).float(), t.to(dtype).float())
    out = mod(s.to(dtype), t.to(dtype))
    assert out.dtype == torch.float32 and torch.isfinite(out)
    torch.testing.assert_close(out, reference)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        under_autocast = mod(s.to(dtype), t.to(dtype))
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, reference)


def test_bad_inputs_raise_with_class_and_shapes():
    mod = PatchGroupTaTLoss(3, 4, patch_size=4)
    s, t, _ = make_inputs(cs=3, ct=4, h=6, w=5)
    cases = [
        (s[0], t, r'expected 4D'),
        (s[:1], t, r'same batch and spatial size'),
        (s[:, :, :5], t, r'same batch and spatial size'),
        (torch.randn(2, 5, 6, 5, dtype=DT), t, r'configured for 3 student / 4 teacher channels'),
    ]
    for s_, t_, msg in cases:
        with pytest.raises(ValueError, match=msg) as err:
            mod.double()(s_, t_)
        assert 'PatchGroupTaTLoss' in str(err.value) and str(tuple(s_.shape)) in str(err.value)
    with pytest.raises(ValueError, match=r'PatchGroupTaTLoss: weight must have shape \(2, 1, 6, 5\)'):
        mod(s, t, torch.ones(2, 2, 6, 5, dtype=DT))
    with pytest.raises(ValueError, match=r'PatchGroupTaTLoss: patch_size \(4, 4\) is larger than the 6x3 map'):
        mod(s[..., :3], t[..., :3])
    with pytest.raises(ValueError, match=r'PatchGroupTaTLoss: patches_per_side \(8, 8\).*6x5'):
        PatchGroupTaTLoss(3, 4, patches_per_side=8).double()(s, t)
    with pytest.raises(ValueError, match=r'AnchorPointTaTLoss: pool_size 6 is larger than the 6x5 map'):
        AnchorPointTaTLoss(3, 4, pool_size=6).double()(s, t)
    with pytest.raises(ValueError, match=r'TaTLoss: .*student \(2, 3, 6, 5\), teacher \(2, 4, 6, 4\)'):
        TaTLoss(3, 4).double()(s, t[..., :4])


def test_build_time_errors():
    with pytest.raises(ValueError, match='exactly one of patch_size and patches_per_side'):
        PatchGroupTaTLoss(3, 4)
    with pytest.raises(ValueError, match='exactly one of patch_size and patches_per_side'):
        PatchGroupTaTLoss(3, 4, patch_size=2, patches_per_side=2)
    with pytest.raises(ValueError, match='group_size'):
        PatchGroupTaTLoss(3, 4, patch_size=2, group_size=0)
    with pytest.raises(ValueError, match="use 'conv1x1' or 'conv3x3'"):
        TaTLoss(3, 4, query_embed='identity')
    with pytest.raises(ValueError, match='Unknown TaT embedding'):
        AnchorPointTaTLoss(3, 4, 2, value_embed='mlp')
    with pytest.raises(ValueError, match='pool_size'):
        AnchorPointTaTLoss(3, 4, 0)


def test_registered_in_root_registry():
    from mmengine.registry import MODELS
    mod = MODELS.build(dict(type='PatchGroupTaTLoss', student_channels=3, teacher_channels=4,
                            patches_per_side=16, group_size=4, loss_weight=0.1))
    assert isinstance(mod, PatchGroupTaTLoss) and mod.loss_weight == 0.1
    assert isinstance(MODELS.build(dict(type='TaTLoss', student_channels=3, teacher_channels=4)), TaTLoss)
    assert isinstance(MODELS.build(dict(type='AnchorPointTaTLoss', student_channels=3, teacher_channels=4,
                                        pool_size=4)), AnchorPointTaTLoss)
