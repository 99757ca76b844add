"""KD and FitNet losses against hand-written formulas (float64, CPU)."""
import copy
import math

import pytest
import torch

from tat_mm.losses import FitNetLoss, KDLoss

DT = torch.float64


def naive_kd(s, t, temperature):
    """T^2 * mean_b sum_k p_t (log p_t - log p_s), softmaxes written with exp and sums."""
    total = 0.0
    for b in range(s.shape[0]):
        es = torch.exp(s[b] / temperature - (s[b] / temperature).max())
        et = torch.exp(t[b] / temperature - (t[b] / temperature).max())
        p_s, p_t = es / es.sum(), et / et.sum()
        total = total + (p_t * (torch.log(p_t) - torch.log(p_s))).sum()
    return temperature ** 2 * total / s.shape[0]


@pytest.mark.parametrize('temperature', [1.0, 4.0])
def test_kd_matches_formula_values_and_grads(temperature):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 7, dtype=DT, generator=g) * 3
    t = torch.randn(3, 7, dtype=DT, generator=g) * 3
    s1, s2, t1 = s.clone().requires_grad_(True), s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    out = KDLoss(temperature, loss_weight=0.5)(s1, t1)
    ref = 0.5 * naive_kd(s2, t, temperature)
    torch.testing.assert_close(out, ref)
    out.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    assert t1.grad is None


def test_kd_is_zero_for_equal_logits_and_fp32_for_half():
    x = torch.randn(4, 10)
    assert KDLoss(2.0)(x, x).abs().item() < 1e-6
    for dtype in (torch.float16, torch.bfloat16):
        out = KDLoss(2.0)(x.to(dtype), (x + 0.3 * torch.randn(4, 10)).to(dtype))
        assert out.dtype == torch.float32 and torch.isfinite(out)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert KDLoss(2.0)(x.to(dtype), x.to(dtype)).dtype == torch.float32


def test_kd_bad_inputs():
    with pytest.raises(ValueError, match=r'KDLoss: .*student \(4, 10\), teacher \(4, 9\)'):
        KDLoss()(torch.randn(4, 10), torch.randn(4, 9))
    with pytest.raises(ValueError, match='KDLoss: expected'):
        KDLoss()(torch.randn(4, 10, 2), torch.randn(4, 10, 2))
    with pytest.raises(ValueError, match='temperature'):
        KDLoss(0.0)


def naive_weighted_mse(pred, target, weight):
    b, c, h, w = pred.shape
    num, den = 0.0, 0.0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                wt = 1.0 if weight is None else weight[i, 0, y, x]
                num = num + wt * ((pred[i, :, y, x] - target[i, :, y, x]) ** 2).sum()
                den = den + wt * c
    return num / den if float(den) > 0 else num * 0.0


@pytest.mark.parametrize('cs,ct,connector,weighted', [
    (4, 4, 'identity', False), (3, 5, 'conv1x1', True), (3, 5, 'conv3x3', False)])
def test_fitnet_matches_reference(cs, ct, connector, weighted):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, cs, 4, 3, dtype=DT, generator=g)
    t = torch.randn(2, ct, 4, 3, dtype=DT, generator=g)
    w = torch.rand(2, 1, 4, 3, dtype=DT, generator=g) if weighted else None
    mod = FitNetLoss(cs, ct, connector, loss_weight=2.0).double()
    ref_mod = copy.deepcopy(mod)
    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    out = mod(s1, t, w)
    ref = 2.0 * naive_weighted_mse(ref_mod.connector(s2), t, w)
    torch.testing.assert_close(out, ref)
    out.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    for (name, p), p_ref in zip(mod.named_parameters(), ref_mod.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, msg=name)


def test_fitnet_weights_precision_and_errors():
    s, t = torch.randn(2, 3, 4, 3), torch.randn(2, 5, 4, 3)
    mod = FitNetLoss(3, 5)
    torch.testing.assert_close(mod(s, t, torch.ones(2, 1, 4, 3)), mod(s, t))
    assert mod(s, t, torch.zeros(2, 1, 4, 3)).item() == 0.0
    assert math.isfinite(mod(s.half(), t.bfloat16()).item()) and mod(s.half(), t.half()).dtype == torch.float32
    torch.testing.assert_close(mod(s.bfloat16(), t.bfloat16()), mod(s.bfloat16().float(), t.bfloat16().float()))
    with pytest.raises(ValueError, match=r'FitNetLoss: configured for 3 student / 5 teacher channels.*\(2, 4, 4, 3\)'):
        mod(torch.randn(2, 4, 4, 3), t)
    with pytest.raises(ValueError, match="use 'conv1x1' or 'conv3x3'"):
        FitNetLoss(3, 5, connector='identity')
