"""Tests of the built-in digits datasets (tat_mm/datasets)."""
import hashlib
import json
import os

import numpy as np
import pytest

from tat_mm.datasets import digits as D

# Small splits keep the tests fast; the defaults are 400 / 100 canvases.
SMALL = dict(num_train=10, num_val=6)


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode() + str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def canvases_digest(canvases) -> str:
    return digest(*[c[k] for c in canvases for k in sorted(c)])


def tree_digest(root) -> dict:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(
                    f.read()).hexdigest()
    return out


@pytest.fixture(scope='module')
def canvas_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('digits'))
    D.ensure_canvas_files(root, **SMALL)
    return root


# --- pure builders ----------------------------------------------------------


def test_split_is_stratified_disjoint_and_seeded():
    _, labels = D.load_digits_arrays()
    split = D.split_indices()
    train, val = split['train'], split['val']
    assert len(train) + len(val) == 1797
    assert len(np.intersect1d(train, val)) == 0
    for digit in range(10):
        n = np.sum(labels == digit)
        assert np.sum(labels[val] == digit) == round(0.2 * n)
    assert np.array_equal(D.split_indices(seed=0)['val'], val)
    assert not np.array_equal(D.split_indices(seed=1)['val'], val)


def test_classification_is_deterministic():
    imgs, labels = D.build_classification('val', image_size=16)
    assert imgs.shape == (359, 16, 16, 3) and imgs.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels) == set(range(10))
    # Grey: white strokes on black, all three channels equal.
    assert (imgs[..., 0] == imgs[..., 2]).all() and imgs.max() == 255
    ref = digest(imgs, labels)
    assert digest(*D.build_classification('val', image_size=16)) == ref
    assert digest(*D.build_classification('val', image_size=16,
                                          seed=1)) != ref
    nearest, _ = D.build_classification('val', 16, interpolation='nearest')
    # Nearest upscaling by 2 repeats every pixel of the 8x8 digit.
    images, _ = D.load_digits_arrays()
    expect = np.round(images[D.split_indices()['val']] * 255)
    assert np.array_equal(nearest[:, ::2, ::2, 0], expect)


def test_canvases_are_deterministic():
    ref = canvases_digest(D.build_canvases('train', 8))
    assert canvases_digest(D.build_canvases('train', 8)) == ref
    assert canvases_digest(D.build_canvases('train', 8, seed=1)) != ref
    # Train and val have their own streams: more canvases extend the list.
    assert canvases_digest(D.build_canvases('train', 5)) == canvases_digest(
        D.build_canvases('train', 8)[:5])


def test_canvas_labels_masks_and_boxes_agree():
    canvases = D.build_canvases('val', 12, canvas_size=64,
                                digit_size=(16, 30))
    for c in canvases:
        img, seg, inst = c['img'], c['seg_map'], c['instance_map']
        labels, boxes = c['labels'], c['bboxes']
        assert img.shape == (64, 64, 3) and seg.shape == inst.shape == (64,
                                                                        64)
        assert 2 <= len(labels) <= 4 and boxes.shape == (len(labels), 4)
        assert np.array_equal(np.unique(inst), np.arange(len(labels) + 1))
        assert np.array_equal(seg > 0, inst > 0)
        for i, (label, box) in enumerate(zip(labels, boxes)):
            mask = inst == i + 1
            # The mask carries the digit's class id.
            assert (seg[mask] == label + 1).all()
            # The box is the tight box of exactly this digit's pixels ...
            ys, xs = np.nonzero(mask)
            assert box.tolist() == [
                xs.min(), ys.min(), xs.max() + 1,
                ys.max() + 1
            ]
            # ... and holds no pixel of another digit.
            x1, y1, x2, y2 = box.astype(int)
            inside = inst[y1:y2, x1:x2]
            assert set(np.unique(inside)) <= {0, i + 1}
        # Strokes are brighter than the background noise (at most 16).
        assert img.max(axis=2)[seg > 0].min() > 16


def test_canvases_use_digits_of_their_own_split(monkeypatch):
    images, labels = D.load_digits_arrays()
    split = D.split_indices()
    # no test pool by default (test_fraction=0)
    ref = {s: canvases_digest(D.build_canvases(s, 6)) for s in ('train', 'val')}
    for blank, keep in (('train', 'val'), ('val', 'train')):
        # Blank out one pool: its split gets empty canvases, the other
        # split is unchanged.
        blanked = images.copy()
        blanked[split[blank]] = 0
        monkeypatch.setattr(D, 'load_digits_arrays', lambda: (blanked, labels))
        assert all(
            len(c['labels']) == 0 for c in D.build_canvases(blank, 6))
        assert canvases_digest(D.build_canvases(keep, 6)) == ref[keep]


def test_canvas_files(tmp_path, canvas_root):
    cv2 = pytest.importorskip('cv2')
    other = str(tmp_path / 'same')
    D.ensure_canvas_files(other, **SMALL)
    files = tree_digest(canvas_root)
    assert len(files) == 2 * (10 + 6) + 2 + 1
    assert tree_digest(other) == files
    D.ensure_canvas_files(other, **SMALL)  # already there: nothing to do
    assert tree_digest(other) == files
    with pytest.raises(ValueError, match='Delete'):
        D.ensure_canvas_files(other, seed=1, **SMALL)
    seeded = str(tmp_path / 'seed1')
    D.ensure_canvas_files(seeded, seed=1, **SMALL)
    assert tree_digest(seeded) != files

    canvases = D.build_canvases('val', 6)
    with open(os.path.join(canvas_root, 'annotations',
                           'instances_val.json')) as f:
        coco = json.load(f)
    assert [c['name'] for c in coco['categories']] == list(D.DIGIT_CLASSES)
    for img_id, c in enumerate(canvases, 1):
        name = f'{img_id - 1:05d}.png'
        img = cv2.imread(os.path.join(canvas_root, 'images', 'val', name))
        assert np.array_equal(img[..., ::-1], c['img'])  # cv2 reads BGR
        mask = cv2.imread(
            os.path.join(canvas_root, 'masks', 'val', name),
            cv2.IMREAD_UNCHANGED)
        assert np.array_equal(mask, c['seg_map'])
        anns = [a for a in coco['annotations'] if a['image_id'] == img_id]
        assert [a['category_id'] - 1 for a in anns] == c['labels'].tolist()
        xywh = [a['bbox'] for a in anns]
        x1y1 = c['bboxes'][:, :2]
        wh = c['bboxes'][:, 2:] - x1y1
        assert np.array_equal(np.array(xywh).reshape(-1, 4),
                              np.concatenate([x1y1, wh], axis=1))


# --- upstream datasets, pipelines and evaluators -----------------------------


def evaluate(metric_cfg, dataset, data_samples):
    from mmengine.evaluator import Evaluator
    evaluator = Evaluator(metric_cfg)
    evaluator.dataset_meta = dataset.metainfo
    evaluator.process(data_samples=data_samples, data_batch=None)
    return evaluator.evaluate(len(data_samples))


def test_classification_dataset_and_accuracy():
    pytest.importorskip('mmpretrain')
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    import tat_mm.datasets  # noqa: F401 (registers the datasets)
    init_default_scope('mmpretrain')
    dataset = DATASETS.build(
        dict(
            type='DigitsClassificationDataset',
            split='val',
            image_size=16,
            pipeline=[
                dict(type='RandomFlip', prob=0.0),
                dict(type='PackInputs')
            ]))
    assert len(dataset) == 359
    assert dataset.metainfo['classes'] == D.DIGIT_CLASSES
    item = dataset[0]
    assert tuple(item['inputs'].shape) == (3, 16, 16)
    _, labels = D.build_classification('val', image_size=16)
    assert item['data_samples'].gt_label.tolist() == [labels[0]]

    samples = []
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        samples.append(sample.set_pred_label(sample.gt_label))
    result = evaluate(dict(type='Accuracy'), dataset, samples)
    assert result['accuracy/top1'] == pytest.approx(100.0)


def test_segmentation_dataset_and_iou(canvas_root):
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import DATASETS

    import tat_mm.datasets  # noqa: F401 (registers the datasets)
    init_default_scope('mmseg')
    dataset = DATASETS.build(
        dict(
            type='DigitsSegDataset',
            data_root=canvas_root,
            split='val',
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations'),
                dict(type='PackSegInputs')
            ],
            **SMALL))
    assert len(dataset) == 6
    assert dataset.metainfo['classes'] == D.SEG_CLASSES
    assert len(dataset.metainfo['palette']) == 11
    canvases = D.build_canvases('val', 6)
    samples = []
    for i in range(len(dataset)):
        item = dataset[i]
        assert tuple(item['inputs'].shape) == (3, 96, 96)
        gt = item['data_samples'].gt_sem_seg.data
        assert tuple(gt.shape) == (1, 96, 96)
        assert np.array_equal(gt[0].numpy(), canvases[i]['seg_map'])
        sample = item['data_samples']
        sample.pred_sem_seg = PixelData(data=gt.clone())
        samples.append(sample)
    result = evaluate(dict(type='IoUMetric'), dataset, samples)
    assert result['mIoU'] == pytest.approx(100.0)
    assert result['aAcc'] == pytest.approx(100.0)


def test_detection_dataset_and_coco_metric(canvas_root):
    pytest.importorskip('mmdet')
    import torch
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData

    import tat_mm.datasets  # noqa: F401 (registers the datasets)
    init_default_scope('mmdet')
    dataset = DATASETS.build(
        dict(
            type='DigitsDetDataset',
            data_root=canvas_root,
            split='val',
            test_mode=True,
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True),
                dict(
                    type='PackDetInputs',
                    meta_keys=('img_id', 'img_path', 'ori_shape',
                               'img_shape'))
            ],
            **SMALL))
    assert len(dataset) == 6
    assert dataset.metainfo['classes'] == D.DIGIT_CLASSES
    canvases = D.build_canvases('val', 6)
    samples = []
    for i in range(len(dataset)):
        item = dataset[i]
        assert tuple(item['inputs'].shape) == (3, 96, 96)
        gt = item['data_samples'].gt_instances
        bboxes = getattr(gt.bboxes, 'tensor', gt.bboxes)
        assert np.array_equal(bboxes.numpy(), canvases[i]['bboxes'])
        assert np.array_equal(gt.labels.numpy(), canvases[i]['labels'])
        sample = item['data_samples']
        sample.pred_instances = InstanceData(
            bboxes=bboxes.clone(),
            labels=gt.labels.clone(),
            scores=torch.ones(len(gt.labels)))
        samples.append(sample)
    ann_file = os.path.join(canvas_root, 'annotations', 'instances_val.json')
    result = evaluate(
        dict(type='CocoMetric', ann_file=ann_file, metric='bbox'), dataset,
        samples)
    assert result['coco/bbox_mAP'] == pytest.approx(1.0)
    assert result['coco/bbox_mAP_50'] == pytest.approx(1.0)
