"""DAMDistillLoss: gradient flow, masks, all task feature sizes, errors, real feature losses."""
import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS

import tat_mm.losses  # noqa: F401  (registers the real losses and DAMDistillLoss)
from tat_mm.losses import DAMDistillLoss
from tat_mm.modules import extract_areas


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny tensors: one intra-op thread is far faster on a busy 2-core machine (no spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@MODELS.register_module(name='_DAMTestMSELoss', force=True)
class _TestMSELoss(nn.Module):
    """Minimal loss with the feature-loss contract: sum(w * d^2) / (C * sum(w)) after a 1x1 conv."""

    def __init__(self, student_channels, teacher_channels, loss_weight=1.0):
        super().__init__()
        self.proj = nn.Conv2d(student_channels, teacher_channels, 1)
        self.loss_weight = loss_weight

    def forward(self, student_feat, teacher_feat, weight=None):
        d2 = (self.proj(student_feat) - teacher_feat.detach())**2
        if weight is None:
            weight = torch.ones_like(d2[:, :1])
        return self.loss_weight * (weight * d2).sum() / (d2.shape[1] * weight.sum())


def _build(cs=4, ct=8, feature_loss=None, **kwargs):
    torch.manual_seed(0)
    kwargs.setdefault('dam', dict(num_classes=2, feat_channels=8))
    return DAMDistillLoss(feature_loss or dict(type='_DAMTestMSELoss'), student_channels=cs,
                          teacher_channels=ct, **kwargs)


def _feats(b=2, cs=4, ct=8, h=7, w=7):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(b, cs, h, w, generator=g).requires_grad_()
    t = torch.randn(b, ct, h, w, generator=g).requires_grad_()  # a leaf, to see if grad leaks
    return s, t


def _grad_ok(p):
    return p.grad is not None and p.grad.abs().sum() > 0


def test_terms_and_gradient_flow():
    loss = _build()
    s, t = _feats()
    out = loss(s, t)
    assert set(out) == {'loss_feat', 'loss_dam'}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())

    # The masked feature loss reaches the student (and its own parameters), never the teacher,
    # and not DAM: the mask is not differentiated.
    out['loss_feat'].backward(retain_graph=True)
    assert _grad_ok(s) and t.grad is None
    assert _grad_ok(loss.feature_loss.proj.weight)
    assert all(p.grad is None for p in loss.dam.parameters())
    assert all(p.grad is None for p in loss.align.parameters())

    # The DAM loss trains DAM (all three heads) and the student adapter; still nothing to teacher.
    s.grad = None
    out['loss_dam'].backward()
    for name, p in loss.dam.named_parameters():
        assert _grad_ok(p), name
    assert _grad_ok(loss.align[0].weight)
    assert _grad_ok(s) and t.grad is None


def test_teacher_branch_is_a_fixed_target():
    loss = _build()
    outputs = []
    loss.dam.register_forward_hook(lambda m, i, o: outputs.append(o))
    s, t = _feats()
    loss(s, t)
    student_out, teacher_out = outputs
    assert all(v.requires_grad for v in student_out.values())
    assert not any(v.requires_grad for v in teacher_out.values())


def test_detach_student_for_dam():
    loss = _build(detach_student_for_dam=True)
    s, t = _feats()
    loss(s, t)['loss_dam'].backward()
    assert s.grad is None and _grad_ok(loss.align[0].weight)


def test_mask_of_ones_equals_unwrapped_loss():
    loss = _build(area_source='all')
    s, t = _feats()
    wrapped = loss(s, t)['loss_feat']
    assert torch.allclose(wrapped, loss.feature_loss(s, t))
    assert torch.allclose(loss.feature_loss(s, t, weight=torch.ones(2, 1, 7, 7)),
                          loss.feature_loss(s, t))


@pytest.mark.parametrize('source', ['student', 'teacher'])
def test_loss_uses_the_dam_mask(source):
    loss = _build(area_source=source, topk=2)
    s, t = _feats()
    got = loss(s, t)['loss_feat']
    with torch.no_grad():
        dam_in = loss.align(s) if source == 'student' else t
        o = loss.dam(dam_in)
        mask = extract_areas(o['heatmap'], o['size'], o['offset'], k=2)['mask']
    assert 0 < mask.mean() < 1  # a real restriction, not all ones
    assert torch.allclose(got, loss.feature_loss(s, t, weight=mask))
    assert not torch.allclose(got, loss.feature_loss(s, t))


def test_union_and_intersection():
    loss = _build(topk=1)
    heat = torch.zeros(1, 2, 5, 5)
    zeros = torch.zeros(1, 2, 5, 5)
    size = torch.full((1, 2, 5, 5), 3.0)
    hs, ht = heat.clone(), heat.clone()
    hs[0, 0, 1, 1] = 0.9  # student area: cells 0..2
    ht[0, 1, 3, 3] = 0.9  # teacher area: cells 2..4
    s_dam, t_dam = dict(heatmap=hs, size=size, offset=zeros), dict(heatmap=ht, size=size,
                                                                     offset=zeros)
    ms, mt = torch.zeros(5, 5), torch.zeros(5, 5)
    ms[0:3, 0:3] = 1
    mt[2:5, 2:5] = 1
    expected = dict(student=ms, teacher=mt, union=torch.maximum(ms, mt),
                    intersection=torch.minimum(ms, mt), all=torch.ones(5, 5))
    for source, mask in expected.items():
        loss.area_source = source
        assert torch.equal(loss.compute_mask(s_dam, t_dam)[0, 0], mask), source


def test_empty_mask_gives_zero_feature_loss():
    loss = _build(score_thr=1.0)  # sigmoid never exceeds 1: no area at all
    s, t = _feats()
    out = loss(s, t)
    assert out['loss_feat'].item() == 0
    out['loss_feat'].backward()  # still part of the graph
    assert t.grad is None
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in loss.feature_loss.parameters())


def test_forward_never_syncs_with_the_host(monkeypatch):
    """No bool(tensor) / .item() in a step: on a GPU each one would stall the stream."""
    loss = _build(feature_loss=dict(type='HierarchicalTaTLoss', pool_size=2, patch_size=2),
                  area_source='union')
    s, t = _feats(h=8, w=8)

    def no_sync(*args):
        raise AssertionError('host sync in DAMDistillLoss.forward')

    monkeypatch.setattr(torch.Tensor, '__bool__', no_sync)
    monkeypatch.setattr(torch.Tensor, 'item', no_sync)
    out = loss(s, t)
    monkeypatch.undo()
    assert set(out) == {'loss_feat_tat_pg', 'loss_feat_tat_ap', 'loss_dam'}


def _masked_hierarchical(**kwargs):
    cfg = dict(type='HierarchicalTaTLoss', pool_size=2, patches_per_side=2, group_size=2,
               patch_weight=0.1, anchor_weight=0.05)
    return _build(feature_loss=cfg, **kwargs)


def test_hierarchical_loss_has_both_terms_masked():
    """The patch-group term with the mask patched, the anchor-point term with the mask pooled:
    against the float64 loop reference (tests/tat_reference.py) with the DAM mask as weight."""
    from tat_reference import embed, ref_anchor_maps, ref_patch_group_maps
    loss = _masked_hierarchical(area_source='teacher', topk=2).double()
    s, t = _feats(h=9, w=8)  # 9 rows: padded patches and a partial anchor row
    s, t = s.detach().double().requires_grad_(), t.detach().double()
    out = loss(s, t)
    assert set(out) == {'loss_feat_tat_pg', 'loss_feat_tat_ap', 'loss_dam'}
    with torch.no_grad():
        o = loss.dam(t)
        mask = extract_areas(o['heatmap'], o['size'], o['offset'], k=2)['mask'].double()
    assert 0 < mask.mean() < 1  # a real restriction, and partly inside the padded border
    q, k, v = embed(loss.feature_loss, s, t)
    expected_pg = 0.1 * ref_patch_group_maps(q, k, v, t, mask, per_side=(2, 2), group=2)
    expected_ap = 0.05 * ref_anchor_maps(q, k, v, t, mask, pool=2)
    torch.testing.assert_close(out['loss_feat_tat_pg'], expected_pg, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out['loss_feat_tat_ap'], expected_ap, rtol=1e-9, atol=1e-12)
    unmasked = loss.feature_loss(s, t)
    assert not torch.allclose(out['loss_feat_tat_ap'], unmasked['loss_tat_ap'])
    grad, = torch.autograd.grad(out['loss_feat_tat_pg'] + out['loss_feat_tat_ap'], s)
    ref_grad, = torch.autograd.grad(expected_pg + expected_ap, s)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-8, atol=1e-12)


def test_hierarchical_loss_empty_mask_gives_zero_terms():
    loss = _masked_hierarchical(score_thr=1.0)
    s, t = _feats(h=8, w=8)
    out = loss(s, t)
    assert out['loss_feat_tat_pg'].item() == 0 and out['loss_feat_tat_ap'].item() == 0
    (out['loss_feat_tat_pg'] + out['loss_feat_tat_ap']).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in loss.feature_loss.parameters())


@pytest.mark.parametrize('mode', ['binary', 'sum', 'score'])
@pytest.mark.parametrize('sizes', [[(7, 7)], [(64, 64)], [(32, 32), (16, 16), (8, 8), (4, 4),
                                                          (2, 2)]],
                         ids=['cls-7x7', 'seg-64x64', 'det-fpn'])
def test_task_feature_sizes(sizes, mode):
    loss = _build(mask_mode=mode)
    for h, w in sizes:
        s, t = _feats(h=h, w=w)
        out = loss(s, t)
        assert all(torch.isfinite(v) for v in out.values()), (h, w)
        sum(out.values()).backward()
        assert _grad_ok(s) and t.grad is None


def test_ground_truth_supervision():
    loss = _build(gt_loss_weight=2.0)
    outputs = []
    loss.dam.register_forward_hook(lambda m, i, o: outputs.append(o))
    s, t = _feats(h=8, w=8)
    boxes = [torch.tensor([[1.0, 1.0, 5.0, 4.0]]), torch.tensor([[0.0, 0.0, 8.0, 8.0]])]
    labels = [torch.tensor([1]), torch.tensor([0])]
    out = loss(s, t, gt_boxes=boxes, gt_labels=labels)
    assert set(out) == {'loss_feat', 'loss_dam', 'loss_dam_gt'}
    assert outputs[1]['heatmap'].requires_grad  # the teacher branch now learns from the boxes
    out['loss_dam_gt'].backward()
    assert _grad_ok(loss.dam.heatmap_head[0].weight)
    assert s.grad is None and t.grad is None  # the gt loss only trains DAM
    with pytest.raises(ValueError, match='together'):
        loss(s, t, gt_boxes=boxes)


def test_build_and_input_errors():
    with pytest.raises(ValueError, match='topk'):
        _build(topk=0)
    with pytest.raises(ValueError, match='num_classes'):
        _build(dam=dict(num_classes=0))
    with pytest.raises(ValueError, match='in_channels'):
        _build(dam=dict(in_channels=4))
    with pytest.raises(ValueError, match='area_source'):
        _build(area_source='both')
    with pytest.raises(ValueError, match='mask_mode'):
        _build(mask_mode='max')
    with pytest.raises(ValueError, match='student_channels'):
        _build(cs=0)
    with pytest.raises(ValueError, match='nms_kernel'):
        _build(nms_kernel=2)
    loss = _build()
    s, t = _feats()
    with pytest.raises(ValueError, match=r'student feature must be \(B, 4, H, W\)'):
        loss(torch.randn(2, 5, 7, 7), t)
    with pytest.raises(ValueError, match=r'teacher feature must be \(B, 8, H, W\)'):
        loss(s, torch.randn(2, 6, 7, 7))
    with pytest.raises(ValueError, match='batch or spatial'):
        loss(s, torch.randn(2, 8, 6, 7))
    with pytest.raises(ValueError, match='batch or spatial'):
        loss(s, torch.randn(3, 8, 7, 7))
    with pytest.raises(ValueError, match='weight must be'):
        loss(s, t, weight=torch.ones(2, 1, 7, 6))


def test_built_from_the_registry():
    loss = MODELS.build(dict(type='DAMDistillLoss', feature_loss=dict(type='_DAMTestMSELoss'),
                             student_channels=4, teacher_channels=8, topk=3))
    assert isinstance(loss, DAMDistillLoss) and loss.dam.in_channels == 8
    assert loss.feature_loss.proj.in_channels == 4  # channels filled into the wrapped config


REAL_LOSSES = [
    dict(type='FitNetLoss'),
    dict(type='TaTLoss'),
    dict(type='PatchGroupTaTLoss', patches_per_side=2),
    dict(type='AnchorPointTaTLoss', pool_size=2),
]


@pytest.mark.parametrize('cfg', REAL_LOSSES, ids=[c['type'] for c in REAL_LOSSES])
def test_with_real_feature_losses(cfg):
    if cfg['type'] not in MODELS.module_dict:
        pytest.skip(f"{cfg['type']} is not registered")
    s, t = _feats(h=8, w=8)
    full = _build(feature_loss=dict(cfg, loss_weight=2.0), area_source='all')
    assert torch.allclose(full(s, t)['loss_feat'], full.feature_loss(s, t))
    loss = _build(feature_loss=cfg, topk=2)
    out = loss(s, t)
    assert torch.isfinite(out['loss_feat']) and out['loss_feat'] > 0
    out['loss_feat'].backward()
    assert _grad_ok(s) and t.grad is None
