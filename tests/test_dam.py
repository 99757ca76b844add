"""DAM, area extraction, CenterNet targets and drawing: hand-made maps with known answers."""
import math

import numpy as np
import pytest
import torch

from tat_mm.modules import (DAM, cells_to_mask, centernet_loss, centernet_targets, decode_boxes,
                            extract_areas, gaussian_focal_loss, gaussian_radius,
                            local_maximum_mask, topk_peaks)
from tat_mm.visualization import draw_dam_areas


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny tensors: one intra-op thread is far faster on a busy 2-core machine (no spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _maps(h, w, num_classes=1, b=1, background=0.0):
    heat = torch.full((b, num_classes, h, w), background)
    return heat, torch.zeros(b, 2, h, w), torch.zeros(b, 2, h, w)


def _set(size, offset, row, col, wh=(0.0, 0.0), off=(0.0, 0.0), img=0):
    size[img, :, row, col] = torch.tensor(wh)
    offset[img, :, row, col] = torch.tensor(off)


def _naive_mask(boxes, h, w):
    """Reference rasteriser: loops over cells with the documented rule (overlap or centre cell)."""
    mask = np.zeros((h, w))
    for x1, y1, x2, y2, cx, cy in boxes:
        ccol, crow = min(max(math.floor(cx), 0), w - 1), min(max(math.floor(cy), 0), h - 1)
        for i in range(h):
            for j in range(w):
                in_x = (j < x2 and j + 1 > x1) or j == ccol
                in_y = (i < y2 and i + 1 > y1) or i == crow
                mask[i, j] = max(mask[i, j], float(in_x and in_y))
    return mask


# ----------------------------------------------------------------------------- peaks and top-k
def test_peaks_nms_topk_exact_boxes_and_mask():
    heat, size, offset = _maps(7, 7, num_classes=2, background=0.01)
    heat[0, 0, 3, 3] = 0.9
    heat[0, 0, 3, 4] = 0.8  # next to a higher peak: suppressed by the 3x3 NMS
    heat[0, 1, 6, 0] = 0.7
    heat[0, 1, 0, 6] = 0.5
    _set(size, offset, 3, 3, wh=(3, 1))  # centre (3.5, 3.5): x [2, 5], y [3, 4]
    _set(size, offset, 6, 0, wh=(2, 2), off=(-0.25, 0.25))  # centre (0.25, 6.75), clamped
    _set(size, offset, 0, 6, wh=(0, 0), off=(0.5, -0.5))  # zero size on a cell corner (7, 0)
    out = extract_areas(heat, size, offset, k=3)
    assert out['labels'].tolist() == [[0, 1, 1]]
    assert out['rows'].tolist() == [[3, 6, 0]]
    assert out['cols'].tolist() == [[3, 0, 6]]
    assert torch.allclose(out['scores'], torch.tensor([[0.9, 0.7, 0.5]]))
    assert out['valid'].all()
    expected_boxes = torch.tensor([[[2.0, 3.0, 5.0, 4.0], [0.0, 5.75, 1.25, 7.0],
                                    [7.0, 0.0, 7.0, 0.0]]])
    assert torch.allclose(out['boxes'], expected_boxes)
    assert out['cells'].tolist() == [[[2, 3, 4, 3], [0, 5, 1, 6], [6, 0, 6, 0]]]
    expected = torch.zeros(7, 7)
    expected[3, 2:5] = 1
    expected[5:7, 0:2] = 1
    expected[0, 6] = 1
    assert torch.equal(out['mask'], expected.view(1, 1, 7, 7))


@pytest.mark.parametrize('width, cells', [(0.0, (3, 3)), (1.0, (3, 3)), (2.0, (2, 4)),
                                          (3.0, (2, 4)), (5.0, (1, 5)), (20.0, (0, 6))])
def test_box_width_to_cells_one_axis(width, cells):
    heat, size, offset = _maps(7, 7)
    heat[0, 0, 3, 3] = 1.0
    _set(size, offset, 3, 3, wh=(width, 0.0))
    out = extract_areas(heat, size, offset, k=1)
    assert out['cells'][0, 0].tolist() == [cells[0], 3, cells[1], 3]
    assert out['mask'].sum().item() == cells[1] - cells[0] + 1


def test_negative_size_counts_as_zero():
    heat, size, offset = _maps(5, 5)
    heat[0, 0, 2, 2] = 1.0
    _set(size, offset, 2, 2, wh=(-4.0, -4.0))
    out = extract_areas(heat, size, offset, k=1)
    assert out['cells'][0, 0].tolist() == [2, 2, 2, 2]
    assert torch.allclose(out['boxes'][0, 0], torch.tensor([2.5, 2.5, 2.5, 2.5]))


def test_mask_matches_naive_rasteriser_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    b, h, w, k = 3, 9, 11, 6
    heat = torch.rand(b, 2, h, w, generator=g)
    size = torch.rand(b, 2, h, w, generator=g) * 6 - 1
    offset = torch.rand(b, 2, h, w, generator=g) * 3 - 1.5
    out = extract_areas(heat, size, offset, k=k)
    for i in range(b):
        boxes = []
        for j in range(k):
            r, c = out['rows'][i, j].item(), out['cols'][i, j].item()
            cx = c + 0.5 + offset[i, 0, r, c].item()
            cy = r + 0.5 + offset[i, 1, r, c].item()
            bw, bh = max(size[i, 0, r, c].item(), 0), max(size[i, 1, r, c].item(), 0)
            x1, x2 = min(max(cx - bw / 2, 0), w), min(max(cx + bw / 2, 0), w)
            y1, y2 = min(max(cy - bh / 2, 0), h), min(max(cy + bh / 2, 0), h)
            boxes.append((x1, y1, x2, y2, cx, cy))
            assert np.allclose(out['boxes'][i, j].numpy(), [x1, y1, x2, y2], atol=1e-5)
        assert np.array_equal(out['mask'][i, 0].numpy(), _naive_mask(boxes, h, w))


def test_batched_equals_per_image():
    g = torch.Generator().manual_seed(1)
    heat = torch.rand(4, 3, 8, 8, generator=g)
    size = torch.rand(4, 2, 8, 8, generator=g) * 4
    offset = torch.rand(4, 2, 8, 8, generator=g) - 0.5
    batched = extract_areas(heat, size, offset, k=5, mode='score')
    for i in range(4):
        single = extract_areas(heat[i:i + 1], size[i:i + 1], offset[i:i + 1], k=5, mode='score')
        for key in ('mask', 'boxes', 'cells', 'labels', 'rows', 'cols', 'scores'):
            assert torch.equal(batched[key][i:i + 1], single[key]), key


def test_ties_are_ordered_by_class_row_col():
    heat = torch.full((1, 2, 3, 3), 0.5)  # flat: every cell is a maximum of its window
    peaks = topk_peaks(heat, k=4)
    assert peaks['labels'].tolist() == [[0, 0, 0, 0]]
    assert peaks['rows'].tolist() == [[0, 0, 0, 1]]
    assert peaks['cols'].tolist() == [[0, 1, 2, 0]]
    heat = torch.zeros(1, 2, 6, 6)
    heat[0, 1, 0, 0] = 0.7
    heat[0, 0, 5, 5] = 0.7
    heat[0, 0, 0, 5] = 0.7
    for _ in range(3):
        peaks = topk_peaks(heat, k=3)
        assert peaks['labels'].tolist() == [[0, 0, 1]]
        assert peaks['rows'].tolist() == [[0, 5, 0]]
        assert peaks['cols'].tolist() == [[5, 5, 0]]


def test_k_larger_than_positions_is_clamped_and_suppressed_cells_invalid():
    heat, size, offset = _maps(2, 2)
    heat[0, 0] = torch.tensor([[0.1, 0.2], [0.3, 0.9]])
    _set(size, offset, 1, 1, wh=(1, 1))
    out = extract_areas(heat, size, offset, k=8)
    assert out['scores'].shape == (1, 4)  # k clamped to K * H * W = 4
    assert out['valid'].tolist() == [[True, False, False, False]]
    assert out['scores'][0, 0].item() == pytest.approx(0.9)
    assert torch.isinf(out['scores'][0, 1:]).all()
    assert torch.equal(out['mask'], torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]]))


def test_score_threshold_drops_peaks():
    heat, size, offset = _maps(5, 5)
    heat[0, 0, 0, 0], heat[0, 0, 4, 4] = 0.9, 0.2
    out = extract_areas(heat, size, offset, k=2, score_thr=0.5)
    assert out['valid'].tolist() == [[True, False]]
    assert out['mask'].sum().item() == 1


def test_mask_modes_sum_and_score():
    heat, size, offset = _maps(5, 5, background=0.0)
    heat[0, 0, 1, 1], heat[0, 0, 3, 3] = 0.6, 0.8
    _set(size, offset, 1, 1, wh=(3, 3))  # cells 0..2
    _set(size, offset, 3, 3, wh=(3, 3))  # cells 2..4
    binary = extract_areas(heat, size, offset, k=2, mode='binary')['mask'][0, 0]
    count = extract_areas(heat, size, offset, k=2, mode='sum')['mask'][0, 0]
    score = extract_areas(heat, size, offset, k=2, mode='score')['mask'][0, 0]
    a, b = torch.zeros(5, 5), torch.zeros(5, 5)
    a[0:3, 0:3] = 1
    b[2:5, 2:5] = 1
    assert torch.equal(binary, torch.maximum(a, b))
    assert torch.equal(count, a + b)
    assert count[2, 2].item() == 2
    assert torch.allclose(score, torch.maximum(0.6 * a, 0.8 * b))


def test_outputs_carry_no_gradient():
    heat = torch.rand(2, 1, 6, 6, requires_grad=True)
    size = torch.rand(2, 2, 6, 6, requires_grad=True)
    offset = torch.rand(2, 2, 6, 6, requires_grad=True)
    out = extract_areas(heat, size, offset, k=3, mode='score')
    assert not any(v.requires_grad for v in out.values())


def test_extraction_bad_inputs():
    heat, size, offset = _maps(4, 4)
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match='k must be'):
            extract_areas(heat, size, offset, k=k)
    with pytest.raises(ValueError, match='kernel'):
        local_maximum_mask(heat, kernel=2)
    with pytest.raises(ValueError, match='size must have 2 channels'):
        extract_areas(heat, torch.zeros(1, 3, 4, 4), offset)
    with pytest.raises(ValueError, match='does not match heatmap'):
        extract_areas(heat, torch.zeros(1, 2, 5, 4), offset)
    with pytest.raises(ValueError, match='heatmap must be'):
        extract_areas(heat[0], size, offset)
    with pytest.raises(ValueError, match='at least one class'):
        extract_areas(torch.zeros(1, 0, 4, 4), size, offset)
    with pytest.raises(ValueError, match='mode must be'):
        extract_areas(heat, size, offset, mode='max')
    with pytest.raises(ValueError, match='score'):
        cells_to_mask(torch.zeros(1, 1, 4, dtype=torch.long), (4, 4), mode='score')
    with pytest.raises(ValueError, match='differ'):
        decode_boxes(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long),
                     size, torch.zeros(1, 2, 3, 4))


# ----------------------------------------------------------------------------- the DAM module
@pytest.mark.parametrize('shared_conv,stride', [(True, 1), (False, 1), (True, 2)],
                         ids=['shared', 'separate', 'shared-stride2'])
def test_dam_shapes_init_and_errors(shared_conv, stride):
    dam = DAM(in_channels=8, num_classes=3, feat_channels=4, shared_conv=shared_conv, stride=stride)
    x = torch.randn(2, 8, 7, 7)
    out = dam(x)
    assert out['heatmap'].shape == (2, 3, 7, 7)
    assert out['size'].shape == out['offset'].shape == (2, 2, 7, 7)
    assert ((out['heatmap'] > 0) & (out['heatmap'] < 1)).all()
    # CenterNet-style init: sizes start near init_size and offsets near 0.
    assert torch.allclose(out['size'], torch.full_like(out['size'], 3.0), atol=0.1)
    assert out['offset'].abs().max() < 0.1
    areas = dam.detect(x, k=4)
    assert areas['mask'].shape == (2, 1, 7, 7)
    with pytest.raises(ValueError, match='num_classes'):
        DAM(8, num_classes=0)
    with pytest.raises(ValueError, match='in_channels'):
        DAM(0)
    with pytest.raises(ValueError, match=r'\(B, 8, H, W\)'):
        dam(torch.randn(2, 4, 7, 7))
    with pytest.raises(ValueError, match='stride'):
        DAM(8, stride=4)
    # One DAM processes every FPN level (convs are size-agnostic), odd sizes too.
    for s in (32, 16, 8, 5, 4, 2, 1):
        assert dam.detect(torch.randn(1, 8, s, s), k=8)['mask'].shape == (1, 1, s, s)


def test_dam_head_structures():
    """Default: one shared conv3x3 + ReLU trunk and a conv1x1 per head; shared_conv=False: three
    separate conv3x3 -> ReLU -> conv1x1 heads. A shared DAM equals a separate one whose three first
    convs are the same conv, and stride 2 is the same heads on the 2x2-pooled map, upsampled."""
    torch.manual_seed(0)
    shared, separate = DAM(8, num_classes=2, feat_channels=4), DAM(8, 2, 4, shared_conv=False)
    assert separate.trunk is None and len(separate.size_head) == 3
    assert shared.trunk[0].kernel_size == (3, 3) and len(shared.size_head) == 1
    n_params = [sum(p.numel() for p in m.parameters()) for m in (shared, separate)]
    assert n_params[0] < n_params[1]
    for head in ('heatmap_head', 'size_head', 'offset_head'):
        getattr(separate, head)[0].load_state_dict(shared.trunk[0].state_dict())
        getattr(separate, head)[2].load_state_dict(getattr(shared, head)[0].state_dict())
    x = torch.randn(2, 8, 7, 6)
    for key, value in shared(x).items():
        torch.testing.assert_close(value, separate(x)[key], msg=key)

    strided = DAM(8, num_classes=2, feat_channels=4, stride=2)
    strided.load_state_dict(shared.state_dict())
    pooled = torch.nn.functional.avg_pool2d(x, 2, 2, ceil_mode=True)  # 4x3 cells
    low = shared(pooled)
    out = strided(x)
    assert out['heatmap'].shape == (2, 2, 7, 6)
    up = torch.nn.functional.interpolate(low['size'], size=(7, 6), mode='bilinear', align_corners=False)
    torch.testing.assert_close(out['size'], up)
    logits = torch.nn.functional.interpolate(torch.logit(low['heatmap'].double()), size=(7, 6),
                                             mode='bilinear', align_corners=False)
    torch.testing.assert_close(out['heatmap'].double(), logits.sigmoid(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- CenterNet targets
def test_gaussian_radius_hand_values():
    # Solved by hand from the three CornerNet cases (min IoU 0.7): 16x16 -> min(1.48, 1.306, 1.56).
    r = gaussian_radius(torch.tensor([16.0]), torch.tensor([16.0]))
    assert r.item() == pytest.approx(1.306, abs=5e-3)
    assert gaussian_radius(torch.tensor([2.0]), torch.tensor([4.0])).item() == pytest.approx(
        0.2155, abs=5e-3)


def test_centernet_targets_values():
    boxes = [torch.tensor([[0.0, 0.0, 16.0, 16.0], [2.0, 2.0, 6.0, 4.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1, 0]), torch.zeros(0, dtype=torch.long)]
    t = centernet_targets(boxes, labels, num_classes=2, feat_size=(16, 16))
    heat = t['heatmap']
    assert heat.shape == (2, 2, 16, 16)
    assert heat[1].sum() == 0  # the image without boxes
    # Box 1: centre (8, 8) -> cell (8, 8), radius 1, sigma 0.5: exp(-d^2 / 0.5) in a 3x3 window.
    window = heat[0, 1, 7:10, 7:10]
    e1, e2 = math.exp(-2), math.exp(-4)
    assert torch.allclose(window, torch.tensor([[e2, e1, e2], [e1, 1.0, e1], [e2, e1, e2]]))
    assert heat[0, 1].sum().item() == pytest.approx(1 + 4 * e1 + 4 * e2)
    # Box 2: centre (4, 3) -> cell (row 3, col 4), radius 0: a single 1 in class 0.
    assert heat[0, 0, 3, 4] == 1 and heat[0, 0].sum() == 1
    assert t['batch'].tolist() == [0, 0]
    assert t['rows'].tolist() == [8, 3] and t['cols'].tolist() == [8, 4]
    assert torch.allclose(t['size'], torch.tensor([[16.0, 16.0], [4.0, 2.0]]))
    assert torch.allclose(t['offset'], torch.tensor([[-0.5, -0.5], [-0.5, -0.5]]))


def test_centernet_overlapping_peaks_take_max_and_bad_labels():
    boxes = [torch.tensor([[0.0, 0.0, 16.0, 16.0], [1.0, 0.0, 17.0, 16.0]])]
    t = centernet_targets(boxes, [torch.tensor([0, 0])], 1, (16, 16))
    # Peaks at cols 8 and 9 of row 8: each 1 at its centre, max elsewhere.
    assert t['heatmap'][0, 0, 8, 8] == 1 and t['heatmap'][0, 0, 8, 9] == 1
    assert t['heatmap'][0, 0, 8, 10].item() == pytest.approx(math.exp(-2))
    with pytest.raises(ValueError, match='labels must be in'):
        centernet_targets(boxes, [torch.tensor([0, 1])], 1, (16, 16))
    with pytest.raises(ValueError, match=r'\(N, 4\)'):
        centernet_targets([torch.zeros(2, 3)], [torch.zeros(2, dtype=torch.long)], 1, (8, 8))


def test_gaussian_focal_loss_hand_value():
    pred = torch.tensor([0.8, 0.2])
    target = torch.tensor([1.0, 0.5])
    pos = -math.log(0.8) * 0.2**2
    neg = -math.log(0.8) * 0.2**2 * 0.5**4
    assert gaussian_focal_loss(pred, target).item() == pytest.approx(pos + neg, rel=1e-5)


def test_centernet_loss_trains_all_dam_heads():
    torch.manual_seed(0)
    dam = DAM(4, num_classes=2, feat_channels=4)
    out = dam(torch.randn(1, 4, 8, 8))
    t = centernet_targets([torch.tensor([[1.0, 1.0, 5.0, 4.0]])], [torch.tensor([1])], 2, (8, 8))
    losses = centernet_loss(out, t)
    assert set(losses) == {'loss_heatmap', 'loss_size', 'loss_offset'}
    sum(losses.values()).backward()
    for name, p in dam.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    perfect = dict(heatmap=t['heatmap'].clamp(1e-4, 1 - 1e-4), size=torch.zeros(1, 2, 8, 8),
                   offset=torch.zeros(1, 2, 8, 8))
    perfect['size'][0, :, 2, 3] = t['size'][0]
    perfect['offset'][0, :, 2, 3] = t['offset'][0]
    best = centernet_loss(perfect, t)
    assert best['loss_size'] == 0 and best['loss_offset'] == 0
    assert best['loss_heatmap'] < losses['loss_heatmap']


# ----------------------------------------------------------------------------- drawing
def test_draw_on_feature_and_image():
    feat = torch.zeros(3, 4, 4)
    feat[:, 0, 0] = 1.0
    canvas = draw_dam_areas(feat, boxes=torch.tensor([[1.0, 1.0, 3.0, 3.0]]), feature_scale=2)
    assert canvas.shape == (8, 8, 3) and canvas.dtype == np.uint8
    assert (canvas[0, 0] == 255).all()  # brightest cell, enlarged 2x
    red = (canvas == [255, 0, 0]).all(-1)
    expected = np.zeros((8, 8), bool)
    expected[2, 2:6] = expected[5, 2:6] = expected[2:6, 2] = expected[2:6, 5] = True
    assert np.array_equal(red, expected)

    image = np.full((16, 16, 3), 100, np.uint8)
    mask = np.zeros((1, 1, 4, 4))
    mask[..., 3, 3] = 1.0
    out = draw_dam_areas(image, boxes=None, mask=mask, mask_alpha=0.5)
    assert out.shape == (16, 16, 3)
    assert (out[12:, 12:] == [50, 178, 50]).all()  # round(100 * 0.5 + (0, 255, 0) * 0.5)
    assert (out[:12] == 100).all() and (out[:, :12] == 100).all()
    assert (image == 100).all()  # input untouched


def test_draw_bad_inputs():
    with pytest.raises(ValueError, match='feat_size'):
        draw_dam_areas(np.zeros((8, 8, 3), np.uint8), boxes=np.zeros((1, 4)))
    with pytest.raises(ValueError, match='does not match'):
        draw_dam_areas(np.zeros((4, 5)), mask=np.zeros((4, 4)))
