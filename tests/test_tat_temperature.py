"""The optional TaT attention temperature (not in the paper; default 1 = Eq. 7)."""
import pytest
import torch

import tat_mm  # noqa: F401
from tat_mm.losses import AnchorPointTaTLoss, HierarchicalTaTLoss, PatchGroupTaTLoss, TaTLoss
from tat_mm.losses.tat_attention import tat_attention
from tat_reference import DT, embed, pixels, ref_anchor_maps, ref_patch_group_maps


def explicit_tempered_tat(q_map, k_map, v_map, target, temperature):
    """Per image: explicit N x N logits divided by T, explicit exp / row sums, plain MSE."""
    num, den = 0.0, 0.0
    for b in range(target.shape[0]):
        q, k, v, t = pixels(q_map[b]), pixels(k_map[b]), pixels(v_map[b]), pixels(target[b])
        logits = torch.zeros(q.shape[0], k.shape[0], dtype=DT)
        for i in range(q.shape[0]):
            for j in range(k.shape[0]):
                logits[i, j] = (q[i] * k[j]).sum() / temperature
        e = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
        rebuilt = (e / e.sum(dim=1, keepdim=True)) @ v
        num = num + ((rebuilt - t) ** 2).sum()
        den = den + t.numel()
    return num / den


@pytest.mark.parametrize('temperature', [1.0, 4.0, 16.0])
@pytest.mark.parametrize('hw', [(3, 4), (6, 6)])  # both attention paths (explicit / blockwise)
def test_tat_loss_with_temperature_matches_explicit_reference(temperature, hw):
    torch.manual_seed(0)
    loss = TaTLoss(4, 6, query_embed='conv1x1', key_embed='identity', value_embed='conv1x1',
                   temperature=temperature).double()
    s = torch.randn(2, 4, *hw, dtype=DT, requires_grad=True)
    t = torch.randn(2, 6, *hw, dtype=DT) * 3  # large activations: T matters
    value = loss(s, t)
    params = [s] + list(loss.parameters())
    grads = torch.autograd.grad(value, params)
    ref = explicit_tempered_tat(loss.query_embed(s), t, loss.value_embed(s), t, temperature)
    ref_grads = torch.autograd.grad(ref, params)
    assert value.item() == pytest.approx(ref.item(), rel=1e-9)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, rtol=1e-8, atol=1e-10)


def _values_and_grads(loss, s, t):
    out = loss(s, t)
    value = sum(out.values()) if isinstance(out, dict) else out
    params = [s] + list(loss.parameters())
    return value, params, torch.autograd.grad(value, params)


@pytest.mark.parametrize('temperature', [1.0, 4.0])
@pytest.mark.parametrize('kind', ['patch_group', 'anchor_point', 'hierarchical'])
def test_patch_group_anchor_point_hierarchical_temperature_match_loops(kind, temperature):
    """The temperature reaches every attention of the large-map losses: values and gradients against
    the explicit-loop references (per image / patch / group, explicit logits / T)."""
    torch.manual_seed(0)
    layout = dict(patches_per_side=2, group_size=2)  # 7x5: padded patches, a padded last group
    loss = dict(
        patch_group=lambda: PatchGroupTaTLoss(3, 4, temperature=temperature, **layout),
        anchor_point=lambda: AnchorPointTaTLoss(3, 4, pool_size=2, temperature=temperature),
        hierarchical=lambda: HierarchicalTaTLoss(3, 4, pool_size=2, temperature=temperature,
                                                 patch_weight=0.7, anchor_weight=0.3, **layout),
    )[kind]().double()
    s = torch.randn(2, 3, 7, 5, dtype=DT, requires_grad=True)
    t = torch.randn(2, 4, 7, 5, dtype=DT) * 3
    value, params, grads = _values_and_grads(loss, s, t)
    q, k, v = embed(loss, s, t)
    pg = ref_patch_group_maps(q, k, v, t, per_side=(2, 2), group=2, temperature=temperature)
    ap = ref_anchor_maps(q, k, v, t, pool=2, temperature=temperature)
    ref = dict(patch_group=pg, anchor_point=ap, hierarchical=0.7 * pg + 0.3 * ap)[kind]
    ref_grads = torch.autograd.grad(ref, params)
    assert value.item() == pytest.approx(ref.item(), rel=1e-9)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, rtol=1e-8, atol=1e-10)


def test_temperature_softens_attention_and_one_is_the_paper():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 5, 8) * 4, torch.randn(1, 7, 8) * 4, torch.eye(7)[None]
    sharp = tat_attention(q, k, v)  # rows are the softmax weights (v = identity)
    soft = tat_attention(q, k, v, temperature=16.0)
    torch.testing.assert_close(sharp, torch.softmax(q @ k.transpose(1, 2), -1))
    assert soft.max(-1).values.mean() < sharp.max(-1).values.mean()


@pytest.mark.parametrize('bad', [0.0, -1.0])
def test_bad_temperature_is_a_clear_error(bad):
    for build in (lambda: TaTLoss(4, 4, temperature=bad),
                  lambda: PatchGroupTaTLoss(4, 4, patch_size=2, temperature=bad),
                  lambda: AnchorPointTaTLoss(4, 4, pool_size=2, temperature=bad),
                  lambda: HierarchicalTaTLoss(4, 4, pool_size=2, patch_size=2, temperature=bad)):
        with pytest.raises(ValueError, match='temperature must be positive'):
            build()
    with pytest.raises(ValueError, match='temperature must be positive'):
        tat_attention(torch.ones(1, 2, 3), torch.ones(1, 2, 3), torch.ones(1, 2, 3), temperature=bad)
