"""DAFA's feature operations and search module: identities, shapes, gradients, RELAX, bad input."""
import itertools

import pytest
import torch

import tat_mm  # noqa: F401
from tat_mm.modules import OPERATIONS, FeatureAugmentSearch, apply_operation

X = torch.randn(3, 8, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize('name', sorted(OPERATIONS))
def test_identity_at_zero_and_shape(name):
    out = apply_operation(name, X, 0.0, gen())
    assert out.shape == X.shape and out.dtype == X.dtype
    if name == 'ChannelShuffle':  # no strength: a permutation of each image's channels
        for b in range(X.shape[0]):
            rows = {tuple(c.flatten().tolist()) for c in X[b]}
            assert {tuple(c.flatten().tolist()) for c in out[b]} == rows
        assert not torch.equal(out, X)
    else:
        torch.testing.assert_close(out, X, rtol=0, atol=1e-12)
    strong = OPERATIONS[name].default_range[1]
    out = apply_operation(name, X, strong, gen())
    assert out.shape == X.shape and torch.isfinite(out).all()
    if name != 'ChannelShuffle':
        assert not torch.allclose(out, X), f'{name} at full strength changed nothing'
    # the same generator state gives the same augmentation (needed by the bi-level step)
    torch.testing.assert_close(apply_operation(name, X, strong, gen(5)),
                               apply_operation(name, X, strong, gen(5)))


@pytest.mark.parametrize('name', sorted(n for n, op in OPERATIONS.items() if op.has_magnitude))
def test_strength_gradient_is_finite_and_nonzero(name):
    strength = torch.tensor(0.5 * OPERATIONS[name].default_range[1], dtype=torch.float64,
                            requires_grad=True)
    weights = torch.randn(X.shape, dtype=torch.float64, generator=gen(1))
    out = apply_operation(name, X, strength, gen(2))
    (grad, ) = torch.autograd.grad((out * weights).sum(), strength)
    assert torch.isfinite(grad) and grad != 0
    if name != 'ChannelDrop':  # the others are exact gradients: compare with central differences
        def f(s):
            return (apply_operation(name, X, s, gen(2)) * weights).sum()
        h = 1e-6
        numeric = (f(strength.detach() + h) - f(strength.detach() - h)) / (2 * h)
        torch.testing.assert_close(grad, numeric, rtol=1e-4, atol=1e-6)


def test_rotate_and_translate_match_explicit_pixel_maps():
    """Rotate 90 degrees / translate half a map on a square map, against explicit index maps."""
    x = torch.arange(2 * 16, dtype=torch.float64).view(2, 1, 4, 4)
    clockwise = torch.empty_like(x)  # output (i, j) reads input (j, 3 - i)
    counter = torch.empty_like(x)    # output (i, j) reads input (3 - j, i)
    for i, j in itertools.product(range(4), range(4)):
        clockwise[:, :, i, j] = x[:, :, j, 3 - i]
        counter[:, :, i, j] = x[:, :, 3 - j, i]
    out = apply_operation('Rotate', x, 90.0, gen(0))
    for b in range(2):  # the sign is random per image
        assert torch.allclose(out[b], clockwise[b]) or torch.allclose(out[b], counter[b])
    out = apply_operation('TranslateX', x, 0.5, gen(0))  # shift by 2 columns, zeros enter
    for b in range(2):
        left = torch.zeros_like(x[b])
        left[:, :, :2] = x[b, :, :, 2:]
        right = torch.zeros_like(x[b])
        right[:, :, 2:] = x[b, :, :, :2]
        assert torch.allclose(out[b], left) or torch.allclose(out[b], right)


def test_cutout_zeroes_the_expected_area():
    side = torch.tensor(0.5, dtype=torch.float64)  # 0.5 * min(9, 11) = 4.5 px
    out = apply_operation('Cutout', torch.ones(4, 2, 9, 11, dtype=torch.float64), side, gen(3))
    removed = (1 - out[:, 0]).sum(dim=(1, 2))
    assert (removed <= 4.5**2 + 1e-9).all() and (removed > 0).all()


def test_search_defaults_follow_public_code():
    search = FeatureAugmentSearch(search_iters=10)
    n = len(OPERATIONS) * (len(OPERATIONS) - 1) // 2
    assert len(search.sub_policies) == n and all(len(p) == 2 for p in search.sub_policies)
    assert torch.all(search.probabilities == 0.5) and torch.all(search.magnitudes == 0.5)
    assert torch.allclose(search.selection_logits, torch.full((n, ), 1e-3))
    hidden = search.control_variate[0]
    assert hidden.in_features == n * 3 and hidden.out_features == 100


def test_sample_depends_only_on_seed_and_step():
    a, b = FeatureAugmentSearch(search_iters=5, seed=7), FeatureAugmentSearch(search_iters=5, seed=7)
    sa, sb = a.sample(3), b.sample(3)
    assert sa.index == sb.index and torch.equal(sa.apply, sb.apply) and sa.op_seed == sb.op_seed
    x = torch.randn(2, 4, 8, 8)
    a.train(), b.train()
    torch.testing.assert_close(a(x), b(x))
    assert a.sample(4).op_seed != sa.op_seed
    a.eval()
    assert a(x) is x  # no augmentation in eval mode


def test_selection_frequencies_follow_logits():
    search = FeatureAugmentSearch(search_iters=0, operations=['Rotate', 'Noise', 'Cutout'], seed=0)
    with torch.no_grad():
        search.selection_logits.copy_(torch.tensor([2.0, 0.0, -1.0]))
    counts = torch.bincount(torch.tensor([search.sample(t).index for t in range(1000)]),
                            minlength=3).double() / 1000
    torch.testing.assert_close(counts, torch.softmax(search.selection_logits.double().detach(), 0),
                               atol=0.05, rtol=0)


def test_relax_is_unbiased_on_a_known_objective():
    """E_b[f(b)], f = weighted applied-flags of the selected sub-policy: RELAX's mean is the
    exact gradient (within 4 standard errors of the mean; the control variate is untrained)."""
    torch.manual_seed(0)
    search = FeatureAugmentSearch(search_iters=1, operations=['Rotate', 'Noise', 'Cutout'], seed=1)
    with torch.no_grad():
        search.probabilities.copy_(torch.tensor([[0.2, 0.7], [0.5, 0.4], [0.9, 0.3]]))
        search.selection_logits.copy_(torch.tensor([0.5, -0.3, 0.1]))
    weights = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]])

    def exact():
        p = search.probabilities
        q = torch.softmax(search.selection_logits, 0)
        return (q * (p * weights).sum(1)).sum()

    expected = torch.autograd.grad(exact(), [search.probabilities, search.selection_logits])
    estimates = [[], []]
    for t in range(500):
        s = search.sample(t)
        g = search.relax_gradients((s.apply[s.index] * weights[s.index]).sum())
        estimates[0].append(g['probabilities'])
        estimates[1].append(g['selection_logits'])
    for values, exact_grad in zip(estimates, expected):
        values = torch.stack(values)
        z = (values.mean(0) - exact_grad) / (values.std(0) / len(values)**0.5 + 1e-12)
        assert z.abs().max() < 4, f'RELAX mean is {z.abs().max():.1f} standard errors off'


def test_policy_text_lists_top_sub_policies():
    search = FeatureAugmentSearch(search_iters=1, operations=['Rotate', 'ChannelShuffle', 'Noise'])
    with torch.no_grad():
        search.selection_logits.copy_(torch.tensor([0.0, 3.0, 0.0]))
    rows = search.top_sub_policies(2)
    assert rows[0]['index'] == 1 and [op['name'] for op in rows[0]['ops']] == ['Rotate', 'Noise']
    text = search.format_policy(2)
    assert 'Rotate(p=0.50, m=0.50 -> 15 degrees)' in text and 'top 2 of 3' in text


@pytest.mark.parametrize('kwargs, message', [
    (dict(operations=['Rotate', 'Blur']), "Unknown DAFA operation 'Blur'"),
    (dict(sub_policies=[('Rotate', 'Sharpen')]), "Unknown DAFA operation 'Sharpen'"),
    (dict(sub_policies=[('Rotate', 'Noise'), ('Noise', )]), 'one common length'),
    (dict(magnitude_ranges=dict(ChannelDrop=(0, 1.5))), 'out of range'),
    (dict(magnitude_ranges=dict(Rotate=(10, 5))), 'out of range'),
    (dict(magnitude_ranges=dict(ChannelShuffle=(0, 1))), 'has no magnitude'),
    (dict(init_magnitude=1.5), 'init_magnitude must be in [0, 1]'),
    (dict(search_iters=-1), 'search_iters must be an integer >= 0'),
    (dict(search_interval=0), 'search_interval must be an integer >= 1'),
])
def test_bad_search_config(kwargs, message):
    kwargs = dict(dict(search_iters=1), **kwargs)
    with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')
                       .replace('(', r'\(').replace(')', r'\)')):
        FeatureAugmentSearch(**kwargs)


def test_map_smaller_than_cutout_is_an_error():
    search = FeatureAugmentSearch(search_iters=1).train()
    with pytest.raises(ValueError, match='too small for the cutout'):
        search(torch.randn(2, 4, 4, 4))  # 0.2 * 4 = 0.8 px
    search(torch.randn(2, 4, 8, 8))  # 1.6 px: fine
    FeatureAugmentSearch(search_iters=1, operations=['Rotate', 'Noise']).train()(
        torch.randn(2, 4, 2, 2))  # no cutout: small maps are fine


def test_policy_figure(tmp_path):
    from tat_mm.visualization.dafa_policy import draw_dafa_policy
    search = FeatureAugmentSearch(search_iters=1)
    fig = draw_dafa_policy(search, top_k=4)
    ax = fig.axes[0]
    assert len(ax.patches) == 4 and 'p=0.50 m=0.50' in ax.get_yticklabels()[0].get_text()
    fig.savefig(tmp_path / 'policy.png')
    assert (tmp_path / 'policy.png').stat().st_size > 0
