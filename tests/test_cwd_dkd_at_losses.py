"""CWD, DKD and AT against plain float64 references written with explicit loops (CPU)."""
import pytest
import torch

from tat_mm.losses import ATLoss, ChannelWiseDivergenceLoss, DKDLoss, KDLoss

DT = torch.float64


def softmax(values):
    """Softmax of a 1D tensor written out: exp(x - max) / sum."""
    e = torch.exp(values - values.max())
    return e / e.sum()


def kl(p, q):
    """sum_i p_i log(p_i / q_i) of two 1D distributions."""
    return (p * (torch.log(p) - torch.log(q))).sum()


def leaves(*tensors):
    return [t.clone().requires_grad_(True) for t in tensors]


# ----------------------------------------------------------------------------------- CWD
def naive_cwd(s, t, tau):
    """T^2 / (N C) * sum over (n, c) of KL between the spatial softmaxes of the channel maps."""
    n, c = s.shape[:2]
    total = 0.0
    for b in range(n):
        for ch in range(c):
            p_t = softmax(t[b, ch].reshape(-1) / tau)
            p_s = softmax(s[b, ch].reshape(-1) / tau)
            total = total + kl(p_t, p_s)
    return tau**2 * total / (n * c)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_cwd_logits_match_reference(tau):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 4, 5, dtype=DT, generator=g) * 2, torch.randn(2, 3, 4, 5, dtype=DT, generator=g) * 2
    s1, s2, t1 = leaves(s, s, t)
    out = ChannelWiseDivergenceLoss(tau=tau, loss_weight=3.0)(s1, t1)
    ref = 3.0 * naive_cwd(s2, t, tau)
    torch.testing.assert_close(out, ref)
    out.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    assert t1.grad is None  # the teacher is detached


def test_cwd_feature_connector_matches_reference():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 3, 3, 4, dtype=DT, generator=g), torch.randn(2, 5, 3, 4, dtype=DT, generator=g)
    loss = ChannelWiseDivergenceLoss(tau=2.0, student_channels=3, teacher_channels=5).double()
    s1, s2 = leaves(s, s)
    out = loss(s1, t)
    weight, bias = loss.connector.weight[:, :, 0, 0], loss.connector.bias
    # 1x1 conv written as a per-position matrix product.
    aligned = torch.einsum('oc,bchw->bohw', weight, s2) + bias[None, :, None, None]
    ref = naive_cwd(aligned, t, 2.0)
    torch.testing.assert_close(out, ref)
    out.backward()
    param_grad = loss.connector.weight.grad.clone()
    loss.zero_grad()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    torch.testing.assert_close(param_grad, loss.connector.weight.grad)


def test_cwd_zero_for_equal_maps_and_fp32_from_half():
    x = torch.randn(2, 4, 6, 6)
    assert ChannelWiseDivergenceLoss()(x, x).abs().item() < 1e-6
    for dtype in (torch.float16, torch.bfloat16):
        out = ChannelWiseDivergenceLoss(4.0, student_channels=4, teacher_channels=8)(
            x.to(dtype), torch.randn(2, 8, 6, 6).to(dtype))
        assert out.dtype == torch.float32 and torch.isfinite(out)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert ChannelWiseDivergenceLoss()(x.to(dtype), x.to(dtype)).dtype == torch.float32


def test_cwd_bad_inputs():
    with pytest.raises(ValueError, match='tau must be positive'):
        ChannelWiseDivergenceLoss(tau=0)
    with pytest.raises(ValueError, match='give both student_channels and teacher_channels'):
        ChannelWiseDivergenceLoss(student_channels=4)
    with pytest.raises(ValueError, match='channels differ.*student_channels / teacher_channels'):
        ChannelWiseDivergenceLoss()(torch.randn(1, 3, 4, 4), torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match=r'same batch and spatial size.*resize=True'):
        ChannelWiseDivergenceLoss()(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r'configured for 3 student / 5 teacher'):
        ChannelWiseDivergenceLoss(student_channels=3, teacher_channels=5)(
            torch.randn(1, 3, 4, 4), torch.randn(1, 4, 4, 4))
    with pytest.raises(ValueError, match='expected 4D'):
        ChannelWiseDivergenceLoss()(torch.randn(2, 3), torch.randn(2, 3))


# ----------------------------------------------------------------------------------- DKD
def naive_dkd(s, t, labels, alpha, beta, temperature):
    """Paper Eq. 6, one image at a time: binary target/non-target KL plus non-target-only KL."""
    total = 0.0
    for b in range(s.shape[0]):
        target = int(labels[b])
        p_s, p_t = softmax(s[b] / temperature), softmax(t[b] / temperature)
        b_s = torch.stack([p_s[target], 1 - p_s[target]])
        b_t = torch.stack([p_t[target], 1 - p_t[target]])
        others = [k for k in range(s.shape[1]) if k != target]
        q_s, q_t = softmax(s[b, others] / temperature), softmax(t[b, others] / temperature)
        total = total + alpha * kl(b_t, b_s) + beta * kl(q_t, q_s)
    return temperature**2 * total / s.shape[0]


@pytest.mark.parametrize('alpha,beta,temperature', [(1.0, 8.0, 4.0), (0.5, 0.5, 1.0)])
def test_dkd_matches_reference(alpha, beta, temperature):
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(4, 6, dtype=DT, generator=g) * 3, torch.randn(4, 6, dtype=DT, generator=g) * 3
    labels = torch.tensor([0, 5, 2, 2])
    s1, s2, t1 = leaves(s, s, t)
    out = DKDLoss(alpha, beta, temperature, loss_weight=0.7)(s1, t1, gt_label=labels)
    ref = 0.7 * naive_dkd(s2, t, labels, alpha, beta, temperature)
    torch.testing.assert_close(out, ref)
    out.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    assert t1.grad is None


def test_dkd_reformulates_kd():
    """Paper Eq. 4: KD = TCKD + (1 - p_t^T) NCKD, so DKD(1, 1 - p_t^T) is KD (one image)."""
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(1, 7, dtype=DT, generator=g), torch.randn(1, 7, dtype=DT, generator=g)
    label, temperature = torch.tensor([3]), 2.0
    p_target = softmax(t[0] / temperature)[3].item()
    dkd = DKDLoss(alpha=1.0, beta=1 - p_target, temperature=temperature)(s, t, gt_label=label)
    torch.testing.assert_close(dkd, KDLoss(temperature)(s, t))


def test_dkd_stable_for_confident_logits_and_fp32_from_half():
    s = torch.tensor([[60.0, -60.0, 0.0], [0.0, 80.0, -80.0]])
    out = DKDLoss(temperature=1.0)(s, -s, gt_label=torch.tensor([0, 1]))
    assert torch.isfinite(out)
    x, labels = torch.randn(4, 10), torch.randint(0, 10, (4, ))
    assert DKDLoss()(x, x, gt_label=labels).abs().item() < 1e-6
    for dtype in (torch.float16, torch.bfloat16):
        out = DKDLoss()(x.to(dtype), torch.randn(4, 10).to(dtype), gt_label=labels)
        assert out.dtype == torch.float32 and torch.isfinite(out)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert DKDLoss()(x.to(dtype), x.to(dtype), gt_label=labels).dtype == torch.float32


def test_dkd_bad_inputs():
    x = torch.randn(2, 5)
    with pytest.raises(ValueError, match='needs the ground-truth labels.*ClsDistiller'):
        DKDLoss()(x, x)
    with pytest.raises(ValueError, match=r'\(B,\) integer class indices'):
        DKDLoss()(x, x, gt_label=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r'\(B,\) integer class indices'):
        DKDLoss()(x, x, gt_label=torch.tensor([1]))
    with pytest.raises(ValueError, match=r'must lie in \[0, 5\)'):
        DKDLoss()(x, x, gt_label=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r'\(B, K\).*head.fc'):
        DKDLoss()(torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3), gt_label=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match='temperature must be positive'):
        DKDLoss(temperature=0)
    with pytest.raises(ValueError, match='alpha and beta'):
        DKDLoss(beta=-1)


# ------------------------------------------------------------------------------------ AT
def naive_at(s, t, p):
    """Per image: Q_j = sum_c |A_cj|^p, normalised by its L2 norm; mean squared difference."""
    b, _, h, w = s.shape
    total = 0.0
    for i in range(b):
        maps = []
        for feat in (s[i], t[i]):
            q = torch.stack([sum(feat[c].reshape(-1)[j].abs()**p for c in range(feat.shape[0]))
                             for j in range(h * w)])
            maps.append(q / torch.sqrt((q**2).sum()))
        total = total + ((maps[0] - maps[1])**2).sum()
    return total / (b * h * w)


@pytest.mark.parametrize('p', [2.0, 3.0])
def test_at_matches_reference_across_widths(p):
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(2, 3, 3, 4, dtype=DT, generator=g), torch.randn(2, 5, 3, 4, dtype=DT, generator=g)
    s1, s2, t1 = leaves(s, s, t)
    out = ATLoss(p=p, loss_weight=500.0)(s1, t1)
    ref = 500.0 * naive_at(s2, t, p)
    torch.testing.assert_close(out, ref)
    out.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    assert t1.grad is None


def test_at_scale_invariant_and_fp32_from_half():
    x = torch.randn(2, 4, 5, 5)
    assert ATLoss()(x, 3 * x).abs().item() < 1e-10  # normalised maps: scale does not matter
    for dtype in (torch.float16, torch.bfloat16):
        out = ATLoss()(x.to(dtype), torch.randn(2, 8, 5, 5).to(dtype))
        assert out.dtype == torch.float32 and torch.isfinite(out)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert ATLoss()(x.to(dtype), x.to(dtype)).dtype == torch.float32
    zeros = torch.zeros(1, 2, 3, 3, requires_grad=True)
    out = ATLoss()(zeros, x[:1, :, :3, :3])
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(zeros.grad).all()


def test_at_bad_inputs():
    with pytest.raises(ValueError, match=r'same batch and spatial size.*resize=True'):
        ATLoss()(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match='expected 4D'):
        ATLoss()(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match='p must be positive'):
        ATLoss(p=0)
