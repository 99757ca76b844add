"""The baselines in real distillers: multi-tap ReviewKD and DKD with labels in a ClsDistiller
(mmpretrain ResNet-18 student and teacher, CPU), and the multi-tap entry checks."""
import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

import tat_mm  # noqa: F401
from distill_cases import CLS_STUDENT, NUM_CLASSES, save_checkpoint
from tat_mm.distill import BaseDistiller, FeatureTap
from tat_mm.distill.tap_inspection import check_distill_taps
from tat_mm.losses import DKDLoss
from tat_mm.testing import fake_batch, offline_model_config

STAGES = ['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4']
REVIEW_KEY = 'loss_review_kd.' + '+'.join(STAGES)


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
    cfg = offline_model_config(CLS_STUDENT, NUM_CLASSES)
    path = save_checkpoint('mmpretrain', cfg, tmp_path_factory.mktemp('teacher') / 'r18.pth')
    return dict(config=cfg, checkpoint=path)


def build(teacher, distill, student_options=None):
    init_default_scope('mmpretrain')
    student = offline_model_config(CLS_STUDENT, NUM_CLASSES)
    teacher = dict(teacher)
    if student_options:  # the same architecture options for both (their weights do not change)
        student.merge(student_options)
        teacher['config'] = offline_model_config(CLS_STUDENT, NUM_CLASSES)
        teacher['config'].merge(student_options)
    return MODELS.build(dict(type='ClsDistiller', student=student, teacher=teacher, distill=distill))


def test_multi_tap_review_kd_and_dkd_with_labels_train(teacher):
    model = build(teacher, [
        dict(student=STAGES, teacher=STAGES,
             losses=[dict(type='ReviewKDLoss', student_channels=[64, 128, 256, 512],
                          teacher_channels=[64, 128, 256, 512], mid_channels=64)]),
        dict(student='head.fc', teacher='head.fc',
             losses=[dict(type='DKDLoss', alpha=1.0, beta=8.0, temperature=4.0)]),
        dict(student='backbone.layer3', teacher='backbone.layer3',
             losses=[dict(type='ATLoss', loss_weight=500.0)]),
    ])
    review_pair = model.pairs[0]
    assert review_pair.multi_tap and review_pair.student_tap_names == STAGES
    assert not model.pairs[1].multi_tap and model.pairs[1].student_tap == 'head.fc'
    # One hook per module although layer3 is in two entries.
    assert len(model.student_taps.taps) == 5 and len(model.teacher_taps.taps) == 5
    model.train()
    batch = fake_batch('cls', 4, (64, 64), NUM_CLASSES)
    fusion_before = {k: v.detach().clone() for k, v in review_pair.named_parameters()}
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log_vars = model.train_step(batch, optim)
    assert {REVIEW_KEY, 'loss_dkd.head.fc', 'loss_at.backbone.layer3'} <= set(log_vars)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())
    # The fusion (ABF) modules are trained by the multi-tap loss.
    changed = [k for k, v in review_pair.named_parameters() if not torch.equal(v, fusion_before[k])]
    assert any('fusions.0' in k for k in changed) and any('fusions.3' in k for k in changed)

    # DKD got the batch's labels: recompute it on the tapped logits with the labels by hand.
    model.eval()
    data = model.data_preprocessor(batch, True)
    student_feats, teacher_feats = model.tapped_features(data['inputs'], data['data_samples'])
    labels = torch.stack([s.gt_label.reshape(()) for s in data['data_samples']])
    with torch.no_grad():
        losses = model.loss(data['inputs'], data['data_samples'])
    expected = DKDLoss(1.0, 8.0, 4.0)(student_feats['head.fc'], teacher_feats['head.fc'],
                                      gt_label=labels)
    torch.testing.assert_close(losses['loss_dkd.head.fc'], expected)
    # ...and they matter: other labels give another value.
    other = DKDLoss(1.0, 8.0, 4.0)(student_feats['head.fc'], teacher_feats['head.fc'],
                                   gt_label=(labels + 1) % NUM_CLASSES)
    assert not torch.allclose(other, expected)


def test_multi_tap_by_index_and_single_tap_keys(teacher):
    """``student=['backbone'] * 2, index=[2, 3]``: two elements of one tuple output in one loss."""
    model = build(teacher, [
        dict(student=['backbone'] * 2, teacher=['backbone'] * 2, index=[2, 3],
             losses=[dict(type='ReviewKDLoss', student_channels=[256, 512],
                          teacher_channels=[256, 512], mid_channels=32)]),
        dict(student='backbone', teacher='backbone', index=[2, 3], losses=[dict(type='ATLoss')]),
    ], student_options=dict(backbone=dict(out_indices=(0, 1, 2, 3))))
    assert model.pairs[0].student_tap_names == ['backbone.2', 'backbone.3']
    model.train()
    batch = model.data_preprocessor(fake_batch('cls', 2, (64, 64), NUM_CLASSES), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    # The multi-tap key joins the taps; the index-list entry still makes one term per level.
    assert {'loss_review_kd.backbone.2+backbone.3', 'loss_at.backbone.2',
            'loss_at.backbone.3'} <= set(losses)
    losses['loss_review_kd.backbone.2+backbone.3'].backward()


def test_multi_tap_entry_errors(teacher):
    # Entry expansion alone (a static step of the distiller's build, checked before any tap).
    expand = BaseDistiller._expand_entries
    with pytest.raises(ValueError, match='as many student as teacher module paths'):
        expand([dict(student=STAGES, teacher=STAGES[:2], losses=[dict(type='ATLoss')])])
    with pytest.raises(ValueError, match='as many student as teacher module paths'):
        expand([dict(student=STAGES, teacher='backbone.layer4', losses=[dict(type='ATLoss')])])
    with pytest.raises(ValueError, match=r'index=\[0\] needs one element \(int or None\) per tap'):
        expand([dict(student=STAGES, teacher=STAGES, index=[0], losses=[dict(type='ATLoss')])])
    entry, = expand([dict(student=['neck'] * 2, teacher=('neck', 'neck'), index=1, losses=[])])
    assert entry['student'] == ['neck', 'neck'] and entry['index'] == [1, 1]
    with pytest.raises(ValueError, match='has no module'):
        build(teacher, [dict(student=['backbone.layer1', 'backbone.layer9'],
                             teacher=['backbone.layer1', 'backbone.layer2'],
                             losses=[dict(type='ATLoss')])])
    # A single-tap loss on a multi-tap entry, and the multi-tap loss on one tap: build errors.
    with pytest.raises(ValueError, match=r'ATLoss takes one tap; this entry lists several'):
        build(teacher, [dict(student=STAGES, teacher=STAGES, losses=[dict(type='ATLoss')])])
    with pytest.raises(ValueError, match=r"'backbone.layer4': ReviewKDLoss takes several taps"):
        build(teacher, [dict(student='backbone.layer4', teacher='backbone.layer4',
                             losses=[dict(type='ReviewKDLoss', student_channels=[512, 512],
                                          teacher_channels=[512, 512])])])



def test_per_side_index_expansion():
    """``index=dict(student=..., teacher=...)``: per side, lists pairing up; ``index=[...]`` as before."""
    expand = BaseDistiller._expand_entries
    entry, = expand([dict(student='backbone.layer4', teacher='backbone',
                          index=dict(student=None, teacher=0), losses=[])])
    assert entry['index'] == dict(student=None, teacher=0)
    entry, = expand([dict(student='neck', teacher='neck', index=dict(student=1, teacher=1), losses=[])])
    assert entry['index'] == 1  # both sides agree: one value, as a plain index
    assert [e['index'] for e in expand([dict(student='neck', teacher='neck', index=[0, 1], losses=[])])
            ] == [0, 1]
    assert [e['index'] for e in expand([dict(student='neck', teacher='neck', losses=[],
                                             index=dict(student=[0, 1], teacher=(1, 2)))])] == [
        dict(student=0, teacher=1), dict(student=1, teacher=2)]
    assert [e['index'] for e in expand([dict(student='backbone.layer4', teacher='backbone',
                                             index=dict(teacher=[0, 1]), losses=[])])] == [
        dict(student=None, teacher=0), dict(student=None, teacher=1)]
    entry, = expand([dict(student=STAGES[:2], teacher=['backbone.layer1', 'backbone'], losses=[],
                          index=dict(teacher=[None, 0]))])
    assert entry['index'] == dict(student=[None, None], teacher=[None, 0])
    assert [e['index'] for e in BaseDistiller._split_multi_tap(entry)] == [None, dict(student=None,
                                                                                       teacher=0)]
    with pytest.raises(ValueError, match=r'needs as many indices on both sides \(2\)'):
        expand([dict(student='neck', teacher='neck', index=dict(student=[0, 1], teacher=[0]),
                     losses=[])])
    with pytest.raises(ValueError, match=r'needs one element \(int or None\) per tap \(2\)'):
        expand([dict(student=STAGES[:2], teacher=STAGES[:2], index=dict(teacher=[0]), losses=[])])
    with pytest.raises(ValueError, match=r'a per-side index is dict\(student=..., teacher=...\)'):
        expand([dict(student='neck', teacher='neck', index=dict(students=0), losses=[])])
    with pytest.raises(ValueError, match=r"the teacher index '3' is not an int or None"):
        expand([dict(student='neck', teacher='neck', index=dict(teacher='3'), losses=[])])


def test_student_tensor_with_one_element_of_a_teacher_tuple_trains(teacher):
    """A student module's tensor (``backbone.layer4``) paired with element 0 of the teacher
    backbone's tuple output, alone and inside a multi-tap entry; one real train step."""
    model = build(teacher, [
        dict(student='backbone.layer4', teacher='backbone', index=dict(student=None, teacher=0),
             losses=[dict(type='FitNetLoss', student_channels=512, teacher_channels=512)]),
        dict(student=['backbone.layer3', 'backbone.layer4'], teacher=['backbone.layer3', 'backbone'],
             index=dict(teacher=[None, 0]),
             losses=[dict(type='ReviewKDLoss', student_channels=[256, 512],
                          teacher_channels=[256, 512], mid_channels=32)]),
    ])
    assert (model.pairs[0].student_tap, model.pairs[0].teacher_tap) == ('backbone.layer4', 'backbone.0')
    assert model.pairs[1].teacher_tap_names == ['backbone.layer3', 'backbone.0']
    # One hook per (module, index): the teacher's element 0 is recorded once for both entries.
    assert sorted(t.name for t in model.teacher_taps.taps) == ['backbone.0', 'backbone.layer3']
    # validate_taps' check fits both, the multi-tap entry included (its taps checked one by one).
    assert check_distill_taps(model, (64, 64)) == []
    # The teacher feature is its backbone's element 0, i.e. its layer4 output.
    data = model.data_preprocessor(fake_batch('cls', 2, (64, 64), NUM_CLASSES), True)
    layer4 = []
    handle = model.teacher.backbone.layer4.register_forward_hook(lambda m, a, out: layer4.append(out))
    _, teacher_feats = model.tapped_features(data['inputs'], data['data_samples'])
    handle.remove()
    assert torch.equal(teacher_feats['backbone.0'], layer4[0])
    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    log_vars = model.train_step(fake_batch('cls', 2, (64, 64), NUM_CLASSES), optim)
    assert {'loss_fitnet.backbone.layer4', 'loss_review_kd.backbone.layer3+backbone.layer4'} <= set(
        log_vars)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())
    # The index on the wrong side (the student's tensor) says how to set it per side.
    model = build(teacher, [dict(student='backbone.layer4', teacher='backbone', index=0,
                                 losses=[dict(type='FitNetLoss', student_channels=512,
                                              teacher_channels=512)])])
    with pytest.raises(ValueError, match=r"student tap 'backbone.layer4' has index=0 but the module "
                                         r'output is a Tensor.*index=dict\(student=..., teacher=...\)'):
        model.train_step(fake_batch('cls', 2, (64, 64), NUM_CLASSES), optim)
    # The data preprocessor (a dict of images and samples, run before the model): what to tap.
    with pytest.raises(ValueError, match=r"(?s)student tap 'data_preprocessor': the data "
                                         r"preprocessor is no feature.*dict\(student='backbone', "
                                         r"teacher='backbone', use_input=True"):
        FeatureTap(model.student, 'data_preprocessor', model_name='student')

def test_dkd_label_errors(teacher):
    model = build(teacher, [dict(student='head.fc', teacher='head.fc', losses=[dict(type='DKDLoss')])])
    assert model._pass_gt_label
    batch = model.data_preprocessor(fake_batch('cls', 2, (64, 64), NUM_CLASSES), True)
    samples = batch['data_samples']
    labels = model._loss_kwargs(torch.zeros(2, NUM_CLASSES), batch['inputs'], samples)['gt_label']
    assert labels.tolist() == [int(s.gt_label) for s in samples]
    # (The student's own loss needs the labels too, so the distiller's check is called directly.)
    samples[1].set_gt_label([1, 2])  # multi-label
    with pytest.raises(ValueError, match=r'data sample 1 has gt_label=tensor\(\[1, 2\]\).*one class'):
        model._loss_kwargs(torch.zeros(2, NUM_CLASSES), batch['inputs'], samples)
    del samples[1].gt_label
    with pytest.raises(ValueError, match='data sample 1 has gt_label=None'):
        model._loss_kwargs(torch.zeros(2, NUM_CLASSES), batch['inputs'], samples)
    plain = build(teacher, [dict(student='head.fc', teacher='head.fc', losses=[dict(type='KDLoss')])])
    assert not plain._pass_gt_label  # no label gathering when no loss takes them


def test_dkd_refuses_mixed_labels(teacher):
    student = offline_model_config(CLS_STUDENT, NUM_CLASSES)
    student['data_preprocessor'] = dict(
        type='ClsDataPreprocessor', num_classes=NUM_CLASSES,
        batch_augments=dict(augments=[dict(type='Mixup', alpha=0.2)]))
    init_default_scope('mmpretrain')
    with pytest.raises(ValueError, match='batch_augments: Mixup / CutMix'):
        MODELS.build(dict(type='ClsDistiller', student=student, teacher=teacher,
                          distill=[dict(student='head.fc', teacher='head.fc',
                                        losses=[dict(type='DKDLoss')])]))
