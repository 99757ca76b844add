"""DIST, logit standardization (KD / DKD), FitNet's ReLU connector and ReviewKD's default fusion
width against plain float64 references written with explicit loops; DIST and KD + logit
standardization in one real train step of their demo configs (CPU)."""
import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope

import tat_mm  # noqa: F401  (registers the losses and distillers)
from test_baseline_losses import naive_weighted_mse
from test_cwd_dkd_at_losses import kl, naive_dkd, softmax
from test_reviewkd_pkd_mgd_losses import (bn_eval, conv1x1, naive_review_kd, param_grads,
                                          review_inputs)
from tat_mm.losses import DISTLoss, DKDLoss, FitNetLoss, KDLoss, ReviewKDLoss, standardize_logits
from tat_mm.testing import fake_batch, offline_model_config, save_random_checkpoint

DT = torch.float64
ROOT = Path(__file__).resolve().parents[1]


def leaves(*tensors):
    return [t.clone().requires_grad_(True) for t in tensors]


# ---------------------------------------------------------------------------------- DIST
def naive_pearson(a, b, eps=1e-8):
    """The authors' Pearson of two 1D vectors: cosine of the centred vectors, eps on the norms."""
    n = a.shape[0]
    mean_a = sum(a[i] for i in range(n)) / n
    mean_b = sum(b[i] for i in range(n)) / n
    dot = sum((a[i] - mean_a) * (b[i] - mean_b) for i in range(n))
    norm_a = torch.sqrt(sum((a[i] - mean_a)**2 for i in range(n)))
    norm_b = torch.sqrt(sum((b[i] - mean_b)**2 for i in range(n)))
    return dot / (norm_a * norm_b + eps)


def pixel_samples(logits):
    """(B, K) logits as they are; (B, K, H, W): one row of K logits per pixel, in any order."""
    if logits.dim() == 2:
        return [logits[b] for b in range(logits.shape[0])]
    b, _, h, w = logits.shape
    return [logits[i, :, y, x] for i in range(b) for y in range(h) for x in range(w)]


def naive_dist(s, t, beta, gamma, tau):
    """Paper Eq. 6-8: 1 - mean Pearson over samples (rows) and over classes (columns), tau^2."""
    p_s = [softmax(row / tau) for row in pixel_samples(s)]
    p_t = [softmax(row / tau) for row in pixel_samples(t)]
    n, k = len(p_s), p_s[0].shape[0]
    inter = 1 - sum(naive_pearson(p_s[i], p_t[i]) for i in range(n)) / n
    columns_s = [torch.stack([p_s[i][c] for i in range(n)]) for c in range(k)]
    columns_t = [torch.stack([p_t[i][c] for i in range(n)]) for c in range(k)]
    intra = 1 - sum(naive_pearson(columns_s[c], columns_t[c]) for c in range(k)) / k
    return tau**2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize('shape,beta,gamma,tau', [
    ((5, 7), 1.0, 1.0, 1.0),          # classification, the ImageNet setting
    ((5, 7), 2.0, 0.5, 4.0),          # CIFAR's temperature, unequal weights
    ((2, 4, 3, 5), 1.0, 1.0, 1.0),    # segmentation: every pixel a sample
    ((2, 4, 3, 2), 0.5, 2.0, 2.0),
])
def test_dist_matches_reference_values_and_grads(shape, beta, gamma, tau):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(*shape, dtype=DT, generator=g) * 3
    t = torch.randn(*shape, dtype=DT, generator=g) * 3
    s1, s2, t1 = leaves(s, s, t)
    out = DISTLoss(beta, gamma, tau, loss_weight=1.5)(s1, t1)
    ref = 1.5 * naive_dist(s2, t, beta, gamma, tau)
    torch.testing.assert_close(out, ref)
    out.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    assert t1.grad is None  # the teacher is detached


def test_dist_properties_precision_and_errors():
    x = torch.randn(6, 10, generator=torch.Generator().manual_seed(4))
    assert DISTLoss()(x, x).abs().item() < 1e-5  # perfectly correlated: both relations 0 (fp32)
    # relations, not values: a per-sample shift of the logits changes nothing (softmax)
    torch.testing.assert_close(DISTLoss()(x + torch.randn(6, 1), x), DISTLoss()(x, x))
    for dtype in (torch.float16, torch.bfloat16):
        out = DISTLoss(tau=4.0)(x.to(dtype), torch.randn(6, 10).to(dtype))
        assert out.dtype == torch.float32 and torch.isfinite(out)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert DISTLoss()(x.to(dtype), x.to(dtype)).dtype == torch.float32
    with pytest.raises(ValueError, match=r'\(B, K\) or \(B, K, H, W\).*head.fc'):
        DISTLoss()(torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match='same shape'):
        DISTLoss()(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match='at least 2 classes'):
        DISTLoss()(torch.randn(4, 1), torch.randn(4, 1))
    with pytest.raises(ValueError, match='batch of 2 or more per GPU, or gamma=0'):
        DISTLoss()(torch.randn(1, 5), torch.randn(1, 5))
    assert torch.isfinite(DISTLoss(gamma=0.0)(torch.randn(1, 5), torch.randn(1, 5)))
    with pytest.raises(ValueError, match='tau must be positive'):
        DISTLoss(tau=0)
    with pytest.raises(ValueError, match='beta and gamma must be >= 0'):
        DISTLoss(beta=-1)


# -------------------------------------------------------------------- logit standardization
def naive_zscore(row, eps=1e-7):
    """(z - mean) / (eps + std) of one sample, std with Bessel's correction (K - 1)."""
    k = row.shape[0]
    mean = sum(row[i] for i in range(k)) / k
    std = torch.sqrt(sum((row[i] - mean)**2 for i in range(k)) / (k - 1))
    return torch.stack([(row[i] - mean) / (std + eps) for i in range(k)])


def naive_kd_ls(s, t, temperature):
    """T^2 * mean over samples (pixels) of KL(softmax(zscore(t) / T) || softmax(zscore(s) / T))."""
    rows_s, rows_t = pixel_samples(s), pixel_samples(t)
    total = sum(kl(softmax(naive_zscore(zt) / temperature), softmax(naive_zscore(zs) / temperature))
                for zs, zt in zip(rows_s, rows_t))
    return temperature**2 * total / len(rows_s)


@pytest.mark.parametrize('shape,temperature', [((4, 6), 2.0), ((4, 6), 1.0), ((2, 5, 3, 2), 2.0)])
def test_kd_logit_standardization_matches_reference(shape, temperature):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(*shape, dtype=DT, generator=g) * 4
    t = torch.randn(*shape, dtype=DT, generator=g) * 9 + 2
    s1, s2, t1 = leaves(s, s, t)
    out = KDLoss(temperature, loss_weight=9.0, logit_standardization=True)(s1, t1)
    ref = 9.0 * naive_kd_ls(s2, t, temperature)
    torch.testing.assert_close(out, ref)
    out.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    assert t1.grad is None


def test_logit_standardization_ignores_scale_and_shift():
    """What it is for: a student matching the teacher's logits up to scale and shift has loss 0."""
    t = 3 * torch.randn(4, 10, dtype=DT, generator=torch.Generator().manual_seed(7))
    s = 0.2 * t + 3.0
    assert KDLoss(2.0, logit_standardization=True)(s, t).abs().item() < 1e-10
    assert KDLoss(2.0)(s, t).item() > 0.1
    z = standardize_logits(t)
    torch.testing.assert_close(z.mean(dim=1), torch.zeros(4, dtype=DT))
    torch.testing.assert_close(z.std(dim=1), torch.ones(4, dtype=DT), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match='K >= 2'):
        KDLoss(logit_standardization=True)(torch.randn(3, 1), torch.randn(3, 1))


@pytest.mark.parametrize('alpha,beta,temperature', [(9.0, 72.0, 2.0), (1.0, 0.5, 1.0)])
def test_dkd_logit_standardization_matches_reference(alpha, beta, temperature):
    g = torch.Generator().manual_seed(2)
    s = torch.randn(4, 6, dtype=DT, generator=g) * 3
    t = torch.randn(4, 6, dtype=DT, generator=g) * 6
    labels = torch.tensor([0, 5, 2, 2])
    s1, s2, t1 = leaves(s, s, t)
    out = DKDLoss(alpha, beta, temperature, logit_standardization=True)(s1, t1, gt_label=labels)
    z_s = torch.stack([naive_zscore(s2[b]) for b in range(4)])
    z_t = torch.stack([naive_zscore(t[b]) for b in range(4)])
    ref = naive_dkd(z_s, z_t, labels, alpha, beta, temperature)
    torch.testing.assert_close(out, ref)
    out.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    # off by default: DKD as published
    plain = DKDLoss(alpha, beta, temperature)(s, t, gt_label=labels)
    torch.testing.assert_close(plain, naive_dkd(s, t, labels, alpha, beta, temperature))


# ---------------------------------------------------------------------------- FitNet ReLU
def test_fitnet_relu_connector_matches_mdistiller_convreg():
    """relu=True: MSE(ReLU(BN(conv1x1(s))), t), mdistiller's ConvReg (its conv bias aside)."""
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 3, 4, 3, dtype=DT, generator=g)
    t = torch.randn(2, 5, 4, 3, dtype=DT, generator=g).abs()
    mod = FitNetLoss(3, 5, relu=True, loss_weight=2.0).double().eval()
    bn = mod.connector[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    s1, s2 = leaves(s, s)
    out = mod(s1, t)
    ref = 2.0 * naive_weighted_mse(bn_eval(conv1x1(s2, mod.connector[0].weight), bn).clamp_min(0),
                                   t, None)
    torch.testing.assert_close(out, ref)
    out.backward()
    grads = param_grads(mod)
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    ref_grads = param_grads(mod)
    assert set(grads) == {'connector.0.weight', 'connector.1.weight', 'connector.1.bias'}
    for key in grads:
        torch.testing.assert_close(grads[key], ref_grads[key], msg=key)
    # relu=False (the default) keeps the evidence runs' connector: same parameter names
    plain = FitNetLoss(3, 5)
    assert not plain.relu and len(plain.connector) == 2
    assert set(plain.state_dict()) == set(FitNetLoss(3, 5, relu=True).state_dict())
    with pytest.raises(ValueError, match="connector='identity' has none"):
        FitNetLoss(4, 4, connector='identity', relu=True)


# ------------------------------------------------------------------ ReviewKD default width
def test_review_kd_default_fusion_width_is_the_references():
    """mid_channels=None: min(512, deepest student width) for every stage (mdistiller)."""
    assert {f.reduce[0].out_channels for f in ReviewKDLoss([3, 4, 6], [5, 6, 7]).fusions} == {6}
    assert {f.reduce[0].out_channels for f in ReviewKDLoss([64, 2048], [64, 2048]).fusions} == {512}
    assert ReviewKDLoss([3, 4, 6], [5, 6, 7], mid_channels=4).fusions[0].reduce[0].out_channels == 4
    # the default-width loss still equals the reference arithmetic
    torch.manual_seed(0)
    loss = ReviewKDLoss([3, 4, 6], [5, 6, 7]).double().eval()
    student, teacher = review_inputs()
    s1, s2 = leaves(*student), leaves(*student)
    out = loss(s1, teacher)
    ref = naive_review_kd(s2, teacher, loss)
    torch.testing.assert_close(out, ref)
    out.backward()
    ref.backward()
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a.grad, b.grad)


# ------------------------------------------------------------------ real train steps (demo)
DEMO = {  # config: (task, scope, input size, classes, the distillation term's key)
    'cls/dist.py': ('cls', 'mmpretrain', (32, 32), 10, 'loss_dist.head.fc'),
    'cls/kd_ls.py': ('cls', 'mmpretrain', (32, 32), 10, 'loss_kd.head.fc'),
    'seg/dist.py': ('seg', 'mmseg', (96, 96), 11, 'loss_dist.decode_head.conv_seg'),
}


def build_demo_distiller(name, tmp_path):
    """configs/demo/<name>, a random-weight teacher (BN calibrated), built as the runner does."""
    import importlib
    task, scope = DEMO[name][:2]
    cfg = Config.fromfile(str(ROOT / 'configs' / 'demo' / name))
    teacher_config = str(ROOT / 'configs' / 'demo' / task / 'teacher.py')
    ckpt = save_random_checkpoint(scope, offline_model_config(teacher_config),
                                  tmp_path / f'{task}_teacher.pth', seed=1, calibrate_bn=True)
    model = copy.deepcopy(cfg.model)
    model.teacher = dict(config=teacher_config, checkpoint=ckpt)
    if cfg.get('data_preprocessor') is not None:
        model.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    with DefaultScope.overwrite_default_scope(scope):
        return importlib.import_module(f'{scope}.registry').MODELS.build(model), cfg


@pytest.mark.parametrize('name', sorted(DEMO))
def test_demo_config_trains_one_step(name, tmp_path):
    task, scope, size, classes, key = DEMO[name]
    model, cfg = build_demo_distiller(name, tmp_path)
    loss_cfg = cfg.model.distill[0].losses[0]
    tap = cfg.model.distill[0].student
    batch = fake_batch(task, 4, size, classes)
    # The logged term is the loss of the config on the tapped logits.
    model.eval()
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    student_feats, teacher_feats = model.tapped_features(data['inputs'], data['data_samples'])
    with torch.no_grad():
        losses = model.loss(data['inputs'], data['data_samples'])
    loss_type = {'DISTLoss': DISTLoss, 'KDLoss': KDLoss}[loss_cfg.type]
    expected = loss_type(**{k: v for k, v in loss_cfg.items() if k != 'type'})(
        student_feats[tap], teacher_feats[tap])
    torch.testing.assert_close(losses[key], expected)
    # One real step: finite terms, the student's classifier moves, the teacher does not.
    model.train()
    head = 'head.fc' if task == 'cls' else 'decode_head.conv_seg'
    student_w = model.student.get_submodule(head).weight.detach().clone()
    teacher_before = {k: v.detach().clone() for k, v in model.teacher.state_dict().items()}
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log_vars = model.train_step(batch, optim)
    assert key in log_vars and all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())
    assert not torch.equal(model.student.get_submodule(head).weight, student_w)
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


# ------------------------------------------------------- documented differences (parity table)
def test_mgd_mask_is_the_references_on_the_mirrored_draw():
    """Ours keeps u >= lambda, yzd-v/MGD and MMRazor u <= 1 - lambda: ours on u is theirs on 1 - u."""
    from tat_mm.losses import MGDLoss
    loss = MGDLoss(4, 4, lambda_mgd=0.65)
    feat = torch.zeros(3, 4, 16, 16)
    torch.manual_seed(5)
    ours = loss.random_mask(feat)
    torch.manual_seed(5)
    u = torch.rand(3, 1, 16, 16)
    theirs_on_mirror = torch.where((1 - u) > 1 - 0.65, 0, 1).to(ours.dtype)
    assert torch.equal(ours, theirs_on_mirror)
    theirs_on_u = torch.where(u > 1 - 0.65, 0, 1).to(ours.dtype)
    assert not torch.equal(ours, theirs_on_u)  # same seed, other mask


def test_kd_dense_reduction_vs_mmrazor_batchmean():
    """MMRazor's KLDivergence(reduction='batchmean') on (B, K, H, W) is H * W times KDLoss."""
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(6)
    s = torch.randn(2, 5, 3, 4, dtype=DT, generator=g)
    t = torch.randn(2, 5, 3, 4, dtype=DT, generator=g)
    temperature = 2.0
    mmrazor = temperature**2 * F.kl_div(F.log_softmax(s / temperature, dim=1),
                                        F.softmax(t / temperature, dim=1), reduction='batchmean')
    torch.testing.assert_close(mmrazor, 3 * 4 * KDLoss(temperature)(s, t))
