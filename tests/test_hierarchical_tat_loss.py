"""HierarchicalTaTLoss: patch-group + anchor-point TaT with one shared gamma / theta / phi (the authors'
distillation_loss_all) against a float64 reference that embeds once and computes both terms with
explicit loops; equality with the two standalone losses when their embeddings are tied; log keys."""
import copy

import pytest
import torch
from mmengine.registry import MODELS
from tat_reference import DT, embed, ref_anchor_maps, ref_patch_group_maps

from tat_mm.distill.base_distiller import DistillPair
from tat_mm.losses import AnchorPointTaTLoss, HierarchicalTaTLoss, PatchGroupTaTLoss


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny tensors: one intra-op thread is far faster on a busy 2-core machine (no spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_inputs(b=2, cs=3, ct=4, h=6, w=5, weighted=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, cs, h, w, dtype=DT, generator=g)
    t = torch.randn(b, ct, h, w, dtype=DT, generator=g)
    weight = None
    if weighted:
        weight = torch.rand(b, 1, h, w, dtype=DT, generator=g)
        weight[0, 0, 0, :] = 0.0  # some exact zeros
    return s, t, weight


def randomise_bn(mod, seed=1):
    """Non-trivial BN affine parameters, so their gradients are tested too."""
    g = torch.Generator().manual_seed(seed)
    for m in mod.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = 0.5 + torch.rand(m.weight.shape, dtype=DT, generator=g)
            m.bias.data = 0.1 * torch.randn(m.bias.shape, dtype=DT, generator=g)
    return mod


def reference(mod, s, t, weight, patch, per_side, group, pool, delta, zeta):
    """Embed once, then both terms with the explicit-loop references on the same q / k / v."""
    q, k, v = embed(mod, s, t)
    return dict(loss_tat_pg=delta * ref_patch_group_maps(q, k, v, t, weight, patch, per_side, group),
                loss_tat_ap=zeta * ref_anchor_maps(q, k, v, t, weight, pool))


CASES = [
    # (h, w), cs, ct, layout kwargs, pool, embeddings, weighted
    ((6, 6), 3, 4, dict(patch_size=3, group_size=4), 3, ('conv1x1',) * 3, False),
    ((7, 5), 3, 4, dict(patches_per_side=2, group_size=2), 2, ('conv1x1',) * 3, True),  # padding
    ((5, 7), 3, 4, dict(patch_size=(3, 4), group_size=3), 2, ('conv3x3', 'identity', 'conv1x1'), True),
    ((6, 5), 4, 4, dict(patch_size=2, group_size=1), 4, ('identity',) * 3, False),
]


@pytest.mark.parametrize('hw,cs,ct,layout,pool,embeds,weighted', CASES)
def test_values_and_gradients_match_reference(hw, cs, ct, layout, pool, embeds, weighted):
    s, t, w = make_inputs(cs=cs, ct=ct, h=hw[0], w=hw[1], weighted=weighted)
    mod = randomise_bn(HierarchicalTaTLoss(cs, ct, pool, **layout, query_embed=embeds[0],
                                           key_embed=embeds[1], value_embed=embeds[2],
                                           patch_weight=0.1, anchor_weight=0.05).double())
    ref_mod = copy.deepcopy(mod)
    patch = layout.get('patch_size')
    patch = (patch, patch) if isinstance(patch, int) else patch
    per_side = layout.get('patches_per_side')
    per_side = None if per_side is None else (per_side, per_side)
    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    t1 = t.clone().requires_grad_(True)

    out = mod(s1, t1, w)
    ref = reference(ref_mod, s2, t, w, patch, per_side, layout['group_size'], pool, 0.1, 0.05)
    assert set(out) == {'loss_tat_pg', 'loss_tat_ap'}
    for name in out:
        assert out[name].dtype == DT and out[name].dim() == 0
        torch.testing.assert_close(out[name], ref[name], rtol=1e-9, atol=1e-12, msg=name)

    # Gradients of each term separately, then of the sum: student and every shared parameter.
    for name in ('loss_tat_pg', 'loss_tat_ap'):
        got = torch.autograd.grad(out[name], [s1, *mod.parameters()], retain_graph=True, allow_unused=True)
        exp = torch.autograd.grad(ref[name], [s2, *ref_mod.parameters()], retain_graph=True,
                                  allow_unused=True)
        for g_got, g_exp in zip(got, exp):
            torch.testing.assert_close(g_got, g_exp, rtol=1e-8, atol=1e-12, msg=name)
    sum(out.values()).backward()
    sum(ref.values()).backward()
    assert t1.grad is None  # teacher detached
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-8, atol=1e-12)
    for (name, p), p_ref in zip(mod.named_parameters(), ref_mod.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-8, atol=1e-12, msg=name)


@pytest.mark.parametrize('weighted', [False, True])
def test_equals_standalone_losses_with_tied_embeddings(weighted):
    s, t, w = make_inputs(cs=3, ct=4, h=7, w=6, weighted=weighted)
    torch.manual_seed(0)
    hier = randomise_bn(HierarchicalTaTLoss(3, 4, pool_size=2, patch_size=(2, 3), group_size=2,
                                            patch_weight=0.3, anchor_weight=0.7).double())
    patch = PatchGroupTaTLoss(3, 4, patch_size=(2, 3), group_size=2, loss_weight=0.3).double()
    anchor = AnchorPointTaTLoss(3, 4, pool_size=2, loss_weight=0.7).double()
    tied = copy.deepcopy(hier)
    for loss in (patch, anchor):  # the very same modules: tied embeddings
        loss.query_embed, loss.key_embed, loss.value_embed = (tied.query_embed, tied.key_embed,
                                                              tied.value_embed)
    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    out = hier(s1, t, w)
    pg, ap = patch(s2, t, w), anchor(s2, t, w)
    torch.testing.assert_close(out['loss_tat_pg'], pg, rtol=1e-12, atol=0)
    torch.testing.assert_close(out['loss_tat_ap'], ap, rtol=1e-12, atol=0)
    sum(out.values()).backward()
    (pg + ap).backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-10, atol=1e-14)
    for p, p_tied in zip(hier.parameters(), tied.parameters()):
        torch.testing.assert_close(p.grad, p_tied.grad, rtol=1e-10, atol=1e-14)
    # Untied, the two standalone losses train twice the embedding parameters.
    count = sum(p.numel() for p in hier.parameters())
    untied = sum(p.numel() for m in (PatchGroupTaTLoss(3, 4, patch_size=2), AnchorPointTaTLoss(3, 4, 2))
                 for p in m.parameters())
    assert untied == 2 * count


def test_log_keys_through_distill_pair_alone_and_under_dam():
    cfg = dict(type='HierarchicalTaTLoss', student_channels=3, teacher_channels=4, pool_size=2,
               patches_per_side=2, group_size=2, patch_weight=0.1, anchor_weight=0.05)
    s, t = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 8, 8)
    pair = DistillPair('decode_head.x', 'decode_head.y', [cfg])
    out = pair(s, t)
    assert set(out) == {'loss_tat_pg.decode_head.x', 'loss_tat_ap.decode_head.x'}
    dam_cfg = dict(type='DAMDistillLoss', student_channels=3, teacher_channels=4, topk=2,
                   feature_loss={k: v for k, v in cfg.items() if not k.endswith('channels')},
                   dam=dict(feat_channels=4))
    out = DistillPair('neck', 'neck', [dam_cfg])(s, t)
    assert set(out) == {'loss_dam_feat_tat_pg.neck', 'loss_dam_feat_tat_ap.neck', 'loss_dam.neck'}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())


def test_half_precision_and_weight_contract():
    torch.manual_seed(0)
    mod = HierarchicalTaTLoss(3, 4, pool_size=2, patch_size=2, group_size=2)
    s, t = torch.randn(2, 3, 6, 5), torch.randn(2, 4, 6, 5)
    reference_out = mod(s.half().float(), t.half().float())
    out = mod(s.half(), t.half())
    for name in out:
        assert out[name].dtype == torch.float32
        torch.testing.assert_close(out[name], reference_out[name])
    torch.testing.assert_close(mod(s, t, torch.ones(2, 1, 6, 5)), mod(s, t))
    s.requires_grad_(True)
    zero = mod(s, t, torch.zeros(2, 1, 6, 5))
    assert all(v.item() == 0.0 for v in zero.values())
    sum(zero.values()).backward()
    assert torch.isfinite(s.grad).all()


def test_errors_name_the_loss():
    with pytest.raises(ValueError, match='HierarchicalTaTLoss: give exactly one of patch_size'):
        HierarchicalTaTLoss(3, 4, pool_size=2)
    with pytest.raises(ValueError, match='HierarchicalTaTLoss: pool_size must be a positive int'):
        HierarchicalTaTLoss(3, 4, pool_size=0, patch_size=2)
    with pytest.raises(ValueError, match='HierarchicalTaTLoss: group_size'):
        HierarchicalTaTLoss(3, 4, pool_size=2, patch_size=2, group_size=0)
    with pytest.raises(TypeError, match='loss_weight'):
        HierarchicalTaTLoss(3, 4, pool_size=2, patch_size=2, loss_weight=0.1)  # use the two weights
    s, t = torch.randn(2, 3, 6, 5), torch.randn(2, 4, 6, 5)
    with pytest.raises(ValueError, match=r'HierarchicalTaTLoss: pool_size 8 is larger than the 6x5 map'):
        HierarchicalTaTLoss(3, 4, pool_size=8, patch_size=2)(s, t)
    with pytest.raises(ValueError, match=r'HierarchicalTaTLoss: patch_size \(7, 7\) is larger'):
        HierarchicalTaTLoss(3, 4, pool_size=2, patch_size=7)(s, t)
    with pytest.raises(ValueError, match=r'HierarchicalTaTLoss: configured for 3 student / 4 teacher'):
        HierarchicalTaTLoss(3, 4, pool_size=2, patch_size=2)(t, t)


def test_registered_and_defaults_are_authors_seg_embeddings():
    mod = MODELS.build(dict(type='HierarchicalTaTLoss', student_channels=3, teacher_channels=4,
                            patches_per_side=16, group_size=4, pool_size=4, patch_weight=0.1,
                            anchor_weight=0.05))
    assert isinstance(mod, HierarchicalTaTLoss) and (mod.patch_weight, mod.anchor_weight) == (0.1, 0.05)
    for embedding in (mod.query_embed, mod.key_embed, mod.value_embed):
        assert embedding[0].kernel_size == (1, 1) and isinstance(embedding[1], torch.nn.BatchNorm2d)
    assert mod.patch_grid(129, 129) == ((8, 8), (17, 17))


def test_equals_the_authors_code_on_one_image():
    """The authors' distillation_loss_all as written (benchmarks/bench_losses.py: unfold, groups as
    einsum heads, the same q / k / v for both terms) gives our value on one image whose size the
    patches divide (there their per-image BN equals our batch BN and nothing is dropped)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / 'benchmarks' / 'bench_losses.py'
    spec = importlib.util.spec_from_file_location('bench_losses', path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    mod = randomise_bn(HierarchicalTaTLoss(8, 8, pool_size=4, patches_per_side=4, group_size=4,
                                           patch_weight=0.1, anchor_weight=0.05).double())
    s, t = torch.randn(1, 8, 16, 16, dtype=DT), torch.randn(1, 8, 16, 16, dtype=DT)
    torch.testing.assert_close(sum(mod(s, t).values()),
                               bench.authors_hierarchical(mod, s, t, 4, 4, 4, 0.1, 0.05))
