"""ReviewKD, PKD and MGD against plain float64 references written in the test (CPU)."""
import pytest
import torch
import torch.nn.functional as F

from tat_mm.losses import MGDLoss, PKDLoss, ReviewKDLoss

DT = torch.float64


def leaves(*tensors):
    return [t.clone().requires_grad_(True) for t in tensors]


def conv1x1(x, weight, bias=None):
    """A 1x1 convolution as a matrix product over channels at every position."""
    out = torch.einsum('oc,bchw->bohw', weight[:, :, 0, 0], x)
    return out if bias is None else out + bias[None, :, None, None]


def bn_eval(x, bn):
    """Eval-mode BatchNorm written out: (x - mean) / sqrt(var + eps) * gamma + beta."""
    shape = (1, -1, 1, 1)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def block_mean(x, size):
    """Average pooling of an (H, W) map to (size, size) when size divides H and W: block means."""
    b, c, h, w = x.shape
    return x.reshape(b, c, size, h // size, size, w // size).mean(dim=(3, 5))


def param_grads(module):
    grads = {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}
    module.zero_grad()
    return grads


# ------------------------------------------------------------------------------ ReviewKD
def naive_review_kd(student, teacher, loss):
    """ABF from the deepest stage to the shallowest, HCL per stage, with the loss's parameters."""
    total, residual = 0.0, None
    for i in reversed(range(len(student))):
        fusion = loss.fusions[i]
        x = bn_eval(conv1x1(student[i], fusion.reduce[0].weight), fusion.reduce[1])
        if residual is not None:
            factor = x.shape[-1] // residual.shape[-1]  # nearest upsampling by an integer factor
            up = residual.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
            att = torch.sigmoid(conv1x1(torch.cat([x, up], dim=1), fusion.attention[0].weight,
                                        fusion.attention[0].bias))
            x = x * att[:, :1] + up * att[:, 1:]
        residual = x
        out = bn_eval(F.conv2d(x, fusion.output[0].weight, padding=1), fusion.output[1])
        t = teacher[i]
        h = t.shape[-1]
        # HCL: full-size MSE (weight 1), then pools 4, 2, 1 smaller than the map (1/2, 1/4, 1/8).
        terms, weights, weight = [((out - t)**2).mean()], [1.0], 1.0
        for size in (4, 2, 1):
            if size >= h:
                continue
            weight /= 2
            terms.append(weight * ((block_mean(out, size) - block_mean(t, size))**2).mean())
            weights.append(weight)
        total = total + sum(terms) / sum(weights)
    return total


def review_loss(seed=0):
    torch.manual_seed(seed)
    loss = ReviewKDLoss(student_channels=[3, 4, 6], teacher_channels=[5, 6, 7], mid_channels=4,
                        loss_weight=2.0).double().eval()
    for m in loss.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    return loss


def review_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    sizes = [8, 4, 2]  # HCL: all pools at 8x8, pool 4 skipped at 4x4, only pool 1 at 2x2
    student = [torch.randn(2, c, s, s, dtype=DT, generator=g) for c, s in zip([3, 4, 6], sizes)]
    teacher = [torch.randn(2, c, s, s, dtype=DT, generator=g) for c, s in zip([5, 6, 7], sizes)]
    return student, teacher


def test_review_kd_matches_reference_values_and_grads():
    loss = review_loss()
    student, teacher = review_inputs()
    s1, s2 = leaves(*student), leaves(*student)
    t1 = leaves(*teacher)
    out = loss(s1, t1)
    ref = 2.0 * naive_review_kd(s2, teacher, loss)
    torch.testing.assert_close(out, ref)
    out.backward()
    grads = param_grads(loss)
    ref.backward()
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a.grad, b.grad)
    ref_grads = param_grads(loss)
    assert set(grads) == set(ref_grads) and len(grads) > 10
    for key in grads:
        torch.testing.assert_close(grads[key], ref_grads[key], msg=key)
    assert all(t.grad is None for t in t1)


def test_review_kd_pooled_input_fp32_and_train_mode():
    torch.manual_seed(0)
    loss = ReviewKDLoss([4, 8], [4, 8], mid_channels=4)
    student = [torch.randn(2, 4, 4, 4), torch.randn(2, 8)]  # (B, C): a pooled feature, as 1x1
    teacher = [torch.randn(2, 4, 4, 4), torch.randn(2, 8)]
    assert torch.isfinite(loss(student, teacher))
    for dtype in (torch.float16, torch.bfloat16):
        out = loss([f.to(dtype) for f in student], [f.to(dtype) for f in teacher])
        assert out.dtype == torch.float32 and torch.isfinite(out)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert loss(student, teacher).dtype == torch.float32


def test_review_kd_bad_inputs():
    loss = ReviewKDLoss([4, 8], [4, 8], mid_channels=4)
    x = torch.randn(2, 4, 4, 4)
    with pytest.raises(ValueError, match='takes several taps.*student=\\[.backbone.layer1'):
        loss(x, x)
    with pytest.raises(ValueError, match='configured for 2 taps, got 1 student'):
        loss([x], [x, x])
    with pytest.raises(ValueError, match=r'configured for 8 student / 8 teacher channels at tap 1'):
        loss([x, x], [x, torch.randn(2, 8, 2, 2)])
    with pytest.raises(ValueError, match='at least 2, equally many'):
        ReviewKDLoss([4], [4])
    with pytest.raises(ValueError, match='at least 2, equally many'):
        ReviewKDLoss([4, 8], [4])
    with pytest.raises(ValueError, match='positive ints'):
        ReviewKDLoss([4, 8], [4, 8], mid_channels=0)


# ----------------------------------------------------------------------------------- PKD
def naive_pkd(s, t):
    """Each channel standardised over its B*H*W values (unbiased std + 1e-6); MSE / 2."""
    def standardise(x):
        out = torch.empty_like(x)
        for c in range(x.shape[1]):
            values = x[:, c].reshape(-1)
            mean = values.sum() / values.numel()
            std = torch.sqrt(((values - mean)**2).sum() / (values.numel() - 1))
            out[:, c] = (x[:, c] - mean) / (std + 1e-6)
        return out

    return ((standardise(s) - standardise(t))**2).mean() / 2


def test_pkd_matches_reference_and_pearson():
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(2, 3, 4, 5, dtype=DT, generator=g) * 3 + 1, torch.randn(2, 3, 4, 5, dtype=DT, generator=g)
    s1, s2, t1 = leaves(s, s, t)
    out = PKDLoss(3, 3, loss_weight=6.0)(s1, t1)
    ref = 6.0 * naive_pkd(s2, t)
    torch.testing.assert_close(out, ref)
    out.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    assert t1.grad is None
    # MSE / 2 of standardised channels = mean_c (1 - r_c) (n - 1) / n, r the Pearson correlation.
    n = 2 * 4 * 5
    r = torch.stack([torch.corrcoef(torch.stack([s[:, c].reshape(-1), t[:, c].reshape(-1)]))[0, 1]
                     for c in range(3)])
    torch.testing.assert_close(out / 6.0, ((1 - r) * (n - 1) / n).mean(), rtol=1e-5, atol=1e-6)


def test_pkd_ignores_scale_and_shift_weight_and_fp32():
    x = torch.randn(2, 4, 5, 5)
    assert PKDLoss(4, 4)(x, 7 * x + 3).abs().item() < 1e-8
    w = torch.zeros(2, 1, 5, 5)
    w[:, :, :2] = 1
    t = torch.randn(2, 4, 5, 5)
    rows = PKDLoss(4, 4)(x, t, weight=w)
    from tat_mm.losses.pkd_loss import normalize_per_channel
    expected = 6.0 * ((normalize_per_channel(x) - normalize_per_channel(t))[:, :, :2]**2).mean() / 2
    torch.testing.assert_close(rows, expected)
    for dtype in (torch.float16, torch.bfloat16):
        out = PKDLoss(4, 4)(x.to(dtype), t.to(dtype))
        assert out.dtype == torch.float32 and torch.isfinite(out)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert PKDLoss(4, 4)(x.to(dtype), t.to(dtype)).dtype == torch.float32


def test_pkd_bad_inputs():
    with pytest.raises(ValueError, match=r'student_channels \(4\) must equal teacher_channels \(8\)'):
        PKDLoss(4, 8)
    with pytest.raises(ValueError, match='configured for 4 student / 4 teacher'):
        PKDLoss(4, 4)(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match='at least 2 values'):
        PKDLoss(4, 4)(torch.randn(1, 4, 1, 1), torch.randn(1, 4, 1, 1))
    with pytest.raises(ValueError, match='same batch and spatial size'):
        PKDLoss(4, 4)(torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2))


# ----------------------------------------------------------------------------------- MGD
def naive_mgd(s, t, loss, seed, mask_type, lambda_mgd):
    """align -> random mask (same draw: seed, torch.rand in fp32) -> conv3x3, ReLU, conv3x3 ->
    squared error summed over everything, divided by the batch size."""
    b, _, h, w = t.shape
    torch.manual_seed(seed)
    shape = (b, 1, h, w) if mask_type == 'spatial' else (b, t.shape[1], 1, 1)
    keep = (torch.rand(shape) >= lambda_mgd).to(DT)
    aligned = s if isinstance(loss.align, torch.nn.Identity) else conv1x1(
        s, loss.align.weight, loss.align.bias)
    conv_a, conv_b = loss.generation[0], loss.generation[2]
    hidden = torch.clamp(F.conv2d(aligned * keep, conv_a.weight, conv_a.bias, padding=1), min=0)
    generated = F.conv2d(hidden, conv_b.weight, conv_b.bias, padding=1)
    return ((generated - t)**2).sum() / b, keep


@pytest.mark.parametrize('mask_type,channels', [('spatial', (3, 5)), ('channel', (4, 4))])
def test_mgd_matches_reference(mask_type, channels):
    torch.manual_seed(0)
    loss = MGDLoss(*channels, lambda_mgd=0.5, mask_type=mask_type, loss_weight=2e-2).double()
    g = torch.Generator().manual_seed(6)
    s = torch.randn(2, channels[0], 4, 5, dtype=DT, generator=g)
    t = torch.randn(2, channels[1], 4, 5, dtype=DT, generator=g)
    s1, s2, t1 = leaves(s, s, t)
    torch.manual_seed(11)
    out = loss(s1, t1)
    ref, keep = naive_mgd(s2, t, loss, 11, mask_type, 0.5)
    ref = 2e-2 * ref
    assert 0 < keep.mean() < 1  # some of the positions / channels are masked
    torch.testing.assert_close(out, ref)
    out.backward()
    grads = param_grads(loss)
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    ref_grads = param_grads(loss)
    for key in ref_grads:
        torch.testing.assert_close(grads[key], ref_grads[key], msg=key)
    assert t1.grad is None


def test_mgd_mask_rate_weight_and_fp32():
    loss = MGDLoss(4, 4, lambda_mgd=0.65)
    torch.manual_seed(0)
    keep = loss.random_mask(torch.zeros(64, 4, 16, 16))
    assert keep.shape == (64, 1, 16, 16)
    assert abs(1 - keep.mean().item() - 0.65) < 0.01
    x, t = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.manual_seed(3)
        full = loss(x, t, weight=torch.ones(2, 1, 5, 5))
        torch.manual_seed(3)
        plain = loss(x, t)
        torch.manual_seed(3)
        none = loss(x, t, weight=torch.zeros(2, 1, 5, 5))
    torch.testing.assert_close(full, plain)
    assert none.item() == 0
    for dtype in (torch.float16, torch.bfloat16):
        out = loss(x.to(dtype), t.to(dtype))
        assert out.dtype == torch.float32 and torch.isfinite(out)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert loss(x.to(dtype), t.to(dtype)).dtype == torch.float32


def test_mgd_bad_inputs():
    with pytest.raises(ValueError, match=r'lambda_mgd is the masked fraction'):
        MGDLoss(4, 4, lambda_mgd=1.0)
    with pytest.raises(ValueError, match='mask_type must be one of'):
        MGDLoss(4, 4, mask_type='pixel')
    with pytest.raises(ValueError, match='configured for 4 student / 8 teacher'):
        MGDLoss(4, 8)(torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4))
