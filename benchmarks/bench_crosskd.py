"""What CrossKD's cross head costs: the distillation step vs the student's own step, side by side.

For each dense head (GFL, RetinaNet, ATSS, FCOS; the paper's R101 -> R50 pairs, random weights,
synthetic batches), in interleaved rounds: the student's own train step, the teacher's forward as
the distiller runs it (up to its FPN), the CrossKD distillation step, and, inside it, the second
``get_targets`` of the student's head (the price of leaving the student's ``loss`` untouched:
the authors' detectors compute the targets once for both). Prints one markdown table.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_crosskd.py --heads gfl retinanet
"""
import argparse
import copy
import os
import os.path as osp
import statistics
import sys
import tempfile

import torch
from mmengine.registry import DefaultScope

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import bench_step  # noqa: E402  (timing helpers: interleaved rounds, optimiser, device)

import tat_mm  # noqa: E402,F401
from mmdet.models.utils import unpack_gt_instances  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from tat_mm.testing import fake_batch, offline_model_config, save_random_checkpoint  # noqa: E402

# head: (teacher config, student config, cut): the paper's pairs (tat_mm's configs/det/*_crosskd.py)
PAIRS = {
    'gfl': ('mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py', 'mmdet::gfl/gfl_r50_fpn_1x_coco.py', 3),
    'retinanet': ('mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
                  'mmdet::retinanet/retinanet_r50_fpn_2x_coco.py', 3),
    'atss': ('mmdet::atss/atss_r101_fpn_1x_coco.py', 'mmdet::atss/atss_r50_fpn_1x_coco.py', 3),
    'fcos': ('mmdet::fcos/fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
             'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py', 2),
}
NUM_CLASSES = 80


def bench_head(head: str, size, repeats: int, tmp: str) -> dict:
    teacher_path, student_path, cut = PAIRS[head]
    teacher_cfg = offline_model_config(teacher_path, NUM_CLASSES, size)
    student_cfg = offline_model_config(student_path, NUM_CLASSES, size)
    ckpt = save_random_checkpoint('mmdet', teacher_cfg, f'{tmp}/{head}_teacher.pth')
    device = bench_step.DEVICE
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        plain = MODELS.build(copy.deepcopy(student_cfg)).to(device).train()
        torch.manual_seed(0)
        distiller = MODELS.build(dict(
            type='DetDistiller', student=student_cfg,
            teacher=dict(config=teacher_cfg, checkpoint=ckpt), distill=[],
            cross_head=dict(reused_teacher_head_idx=cut))).to(device).train()
    batch = fake_batch('det', 2, size, NUM_CLASSES)
    data = distiller.data_preprocessor(batch, True)
    s_head = distiller.student.bbox_head
    gt_instances, gt_ignore, img_metas = unpack_gt_instances(data['data_samples'])
    with torch.no_grad():
        levels = distiller.student.extract_feat(data['inputs'])
        featmap_sizes = [x.shape[-2:] for x in levels]

    def targets():
        if head == 'fcos':
            points = s_head.prior_generator.grid_priors(featmap_sizes, device=device)
            s_head.get_targets(points, gt_instances)
        else:
            anchors, valid = s_head.get_anchors(featmap_sizes, img_metas, device=device)
            s_head.get_targets(anchors, valid, gt_instances, img_metas,
                               batch_gt_instances_ignore=gt_ignore)

    def run_teacher():
        with bench_step.amp_context():
            distiller._run_teacher(data['inputs'], data['data_samples'])

    plain_optim = bench_step.optim_wrapper(plain.parameters())
    optim = bench_step.optim_wrapper(distiller.parameters())
    rounds = bench_step.interleaved_times(dict(
        student=lambda: plain.train_step(batch, plain_optim), teacher=run_teacher,
        crosskd=lambda: distiller.train_step(batch, optim), targets=targets), repeats)
    times = bench_step.medians(rounds)
    overhead = statistics.median(d - s - t for d, s, t in zip(
        rounds['crosskd'], rounds['student'], rounds['teacher']))
    return dict(head=head, size=size, times=times, overhead=overhead)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--heads', nargs='+', default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument('--size', type=int, nargs=2, default=(320, 320), metavar=('H', 'W'))
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    parser.add_argument('--amp', action='store_true', help='AmpOptimWrapper steps (GPU only)')
    args = parser.parse_args()
    bench_step.DEVICE, bench_step.AMP = torch.device(args.device), args.amp
    if bench_step.DEVICE.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: torch.cuda.is_available() is False on this machine.')
    if args.amp and bench_step.DEVICE.type != 'cuda':
        parser.error('--amp times AmpOptimWrapper, which needs a GPU: add --device cuda.')
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_head(head, tuple(args.size), args.repeats, tmp) for head in args.heads]
    load_after = os.getloadavg()
    print(f'\nbatch 2, {bench_step.device_label()}, {torch.get_num_threads()} threads, '
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, median of {args.repeats} "
          f'(torch {torch.__version__}); load average 1 min before {load_before[0]:.2f}, after '
          f'{load_after[0]:.2f} on {os.cpu_count()} CPUs\n')
    print('| head (R101 -> R50) | input | student step (s) | teacher to FPN (s) | CrossKD step (s) | '
          'cross-head terms (s) | terms / student step | of which 2nd get_targets (s) |')
    print('|---|---|---|---|---|---|---|---|')
    for r in results:
        t = r['times']
        print(f"| {r['head']} | {r['size'][0]}x{r['size'][1]} | {t['student']:.3f} | "
              f"{t['teacher']:.3f} | {t['crosskd']:.3f} | {r['overhead']:.3f} | "
              f"{100 * r['overhead'] / t['student']:.1f}% | {t['targets']:.3f} |")


if __name__ == '__main__':
    main()
