"""Do DAM's cheap head options find the same areas as the exact three-separate-heads form?

On the built-in digits detection canvases (real handwritten digits, 96x96, 2-4 digits each), every
DAM variant is trained the same way on the same frozen features: CenterNet loss against the
ground-truth boxes (what ``DetDistiller(dam_gt_supervision=True)`` adds), same data order, same
number of steps. Then, on the val canvases, each variant's top-k areas become a binary mask
(``extract_areas``, as ``DAMDistillLoss`` uses them) and the script prints:

* IoU of each variant's mask with the exact form's mask (mean over val images), next to the IoU of
  the exact form with itself trained from another seed (the agreement one can expect at best);
* how much of the ground-truth boxes each mask covers (recall) and how much of the mask lies in
  them (precision).

Features: a ResNet-18 (torchvision) at stride 4 (64 x 24 x 24), frozen; random weights by default, or a
trained detector's tap with ``--config`` / ``--checkpoint`` / ``--tap`` (e.g. the demo teacher:
``--config configs/demo/det/teacher.py --checkpoint work_dirs/.../iter_400.pth --tap neck.0``).

    .venv/bin/python benchmarks/dam_mask_overlap.py [--steps 300] [--topk 4]
"""
import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch loads OpenMP

import argparse  # noqa: E402
import statistics  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tat_mm.datasets.digits import build_canvases  # noqa: E402
from tat_mm.modules import DAM, centernet_loss, centernet_targets, extract_areas  # noqa: E402

NUM_CLASSES = 10
REFERENCE = 'exact: 3 separate heads, 128 wide'
VARIANTS = {  # name: (DAM options, seed)
    REFERENCE: (dict(feat_channels=128, shared_conv=False), 0),
    'exact again, another seed': (dict(feat_channels=128, shared_conv=False), 1),
    '3 separate heads, 64 wide': (dict(feat_channels=64, shared_conv=False), 0),
    'shared 3x3 conv, 64 wide (default)': (dict(), 0),
    'shared 3x3 conv, 32 wide': (dict(feat_channels=32), 0),
    'shared 3x3 conv, 64 wide, stride 2': (dict(stride=2), 0),
}


def images_to_tensor(canvases) -> torch.Tensor:
    imgs = np.stack([c['img'] for c in canvases]).astype(np.float32) / 255.0
    return torch.from_numpy(imgs).permute(0, 3, 1, 2)


@torch.no_grad()
def extract_features(args, images: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) frozen features of the canvases."""
    if args.config:
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        from mmengine.config import Config
        from mmengine.runner import load_checkpoint
        register_all_modules()
        cfg = Config.fromfile(args.config)
        model = MODELS.build(cfg.model).eval()
        load_checkpoint(model, args.checkpoint, map_location='cpu')
        module_path, _, index = args.tap.rpartition('.')
        outputs = []
        handle = model.get_submodule(module_path).register_forward_hook(
            lambda m, i, o: outputs.append(o[int(index)]))
        mean = torch.tensor(cfg.model.data_preprocessor.get('mean', [0, 0, 0])).view(1, 3, 1, 1)
        std = torch.tensor(cfg.model.data_preprocessor.get('std', [1, 1, 1])).view(1, 3, 1, 1)
        feats = []
        for chunk in images.split(50):
            outputs.clear()
            model.extract_feat((chunk * 255 - mean) / std)
            feats.append(outputs[0])
        handle.remove()
        return torch.cat(feats)
    from torchvision.models import resnet18
    torch.manual_seed(0)
    net = resnet18(weights=None).eval()  # random weights; stem + layer1: stride 4, 64 channels
    stem = torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return torch.cat([stem((chunk - mean) / std) for chunk in images.split(50)])


def targets_for(canvases, stride: float, size):
    boxes = [torch.from_numpy(c['bboxes']) / stride for c in canvases]
    labels = [torch.from_numpy(c['labels']) for c in canvases]
    return centernet_targets(boxes, labels, NUM_CLASSES, size)


def train_dam(options: dict, seed: int, feats, canvases, stride: float, args) -> DAM:
    torch.manual_seed(seed)
    dam = DAM(feats.shape[1], num_classes=NUM_CLASSES, **options)
    optim = torch.optim.Adam(dam.parameters(), lr=args.lr)
    order = np.random.RandomState(0)  # the same batches for every variant
    for _ in range(args.steps):
        idx = order.choice(len(canvases), args.batch, replace=False)
        targets = targets_for([canvases[i] for i in idx], stride, feats.shape[-2:])
        loss = sum(centernet_loss(dam(feats[idx]), targets).values())
        optim.zero_grad()
        loss.backward()
        optim.step()
    return dam.eval()


@torch.no_grad()
def masks_of(dam: DAM, feats, topk: int) -> torch.Tensor:
    out = dam(feats)
    return extract_areas(out['heatmap'], out['size'], out['offset'], k=topk)['mask'][:, 0] > 0


def gt_masks(canvases, stride: float, size) -> torch.Tensor:
    """Cells overlapping a ground-truth box (positive area), like the DAM masks are rasterised."""
    h, w = size
    masks = torch.zeros(len(canvases), h, w, dtype=torch.bool)
    for n, c in enumerate(canvases):
        for x1, y1, x2, y2 in c['bboxes'] / stride:
            masks[n, int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))] = True
    return masks


def mean_ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    keep = den > 0
    return (num[keep].float() / den[keep].float()).mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--topk', type=int, default=4, help='areas per image (2-4 digits each)')
    parser.add_argument('--train', type=int, default=400, help='train canvases')
    parser.add_argument('--val', type=int, default=100, help='val canvases')
    parser.add_argument('--config', help='detector config whose tap gives the features')
    parser.add_argument('--checkpoint', help='its trained weights')
    parser.add_argument('--tap', default='neck.0', help='module path + tuple index, e.g. neck.0')
    args = parser.parse_args()
    if bool(args.config) != bool(args.checkpoint):
        parser.error('--config and --checkpoint go together')

    train, val = build_canvases('train', args.train), build_canvases('val', args.val)
    feats_train = extract_features(args, images_to_tensor(train))
    feats_val = extract_features(args, images_to_tensor(val))
    size = tuple(feats_val.shape[-2:])
    stride = train[0]['img'].shape[0] / size[0]
    gt = gt_masks(val, stride, size)

    masks = {}
    for name, (options, seed) in VARIANTS.items():
        dam = train_dam(options, seed, feats_train, train, stride, args)
        masks[name] = masks_of(dam, feats_val, args.topk)
    ref = masks[REFERENCE]
    source = f'{args.config} {args.tap}' if args.config else 'random-weight ResNet-18, stride 4'
    print(f'\nfeatures: {source}, {tuple(feats_val.shape[1:])}; DAM trained {args.steps} steps '
          f'(batch {args.batch}, Adam {args.lr}) on {args.train} canvases with the CenterNet loss; '
          f'top-{args.topk} areas on {args.val} val canvases\n')
    print('| DAM heads | mask IoU with the exact form | GT recall | mask precision | mask area |')
    print('|---|---|---|---|---|')
    for name, mask in masks.items():
        inter = (mask & ref).flatten(1).sum(1)
        union = (mask | ref).flatten(1).sum(1)
        iou = '1 (reference)' if name == REFERENCE else f'{mean_ratio(inter, union):.3f}'
        recall = mean_ratio((mask & gt).flatten(1).sum(1), gt.flatten(1).sum(1))
        precision = mean_ratio((mask & gt).flatten(1).sum(1), mask.flatten(1).sum(1))
        area = statistics.mean(mask.flatten(1).float().mean(1).tolist())
        print(f'| {name} | {iou} | {recall:.3f} | {precision:.3f} | {100 * area:.1f}% |')


if __name__ == '__main__':
    main()
