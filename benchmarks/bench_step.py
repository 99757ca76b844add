"""Cost of distillation per train step, measured side by side in one run, for each task.

For each task it times, on the same batch and interleaved (so load changes hit all alike):
  * one plain student train step (data preprocessor, forward, backward, SGD step);
  * one teacher forward as the distiller runs it (no grad, stopped after the last tap);
  * one distillation train step (teacher forward + student step + distillation terms) for each
    variant of the task's distillation terms (before / after this change, side by side);
and prints the distillation terms' own cost (losses, embeddings, DAM), i.e.
``distill step - student step - teacher forward`` (taken within each round, then the median over
rounds), as a fraction of the student step, next to its target; each loss alone (forward + backward
on the real tapped features: the steadier timing); and the losses' FLOPs as a fraction of the
student step's (torch's FlopCounterMode: the arithmetic share, which no load changes; a target
below it cannot be met by a faster implementation of the same method). Then each loss alone per
term, and DAM's head options on the real tapped features.

    .venv/bin/python benchmarks/bench_step.py [--repeats 5] [--tasks cls seg det]
    .venv/bin/python benchmarks/bench_step.py --device cuda [--amp]   # on a GPU (tools/gpu_check.sh)

``--device cuda`` moves every model to the GPU and synchronises around each timed call; ``--amp``
times MMEngine's ``AmpOptimWrapper`` steps (float16 autocast + loss scaler; GPU only) and runs the
per-loss timings under the same autocast. Without them it measures on CPU exactly as before.

``OMP_WAIT_POLICY=PASSIVE`` is set here (before torch loads OpenMP) unless already set: with the
default (spinning) policy, CPU timings on a shared machine become bimodal.
"""
import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from mmengine.optim import AmpOptimWrapper, OptimWrapper  # noqa: E402
from mmengine.registry import MODELS as ROOT_MODELS  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

import tat_mm  # noqa: F401,E402
from tat_mm.testing import fake_batch, offline_model_config, save_random_checkpoint  # noqa: E402

NUM_CLASSES = 10

# The distillation terms of the shipped configs on small inputs (configs/{cls,seg,det}/*_tat*.py;
# cls: *_tat.py plus KD). DAM settings as the benchmark has always used (top-8 areas).
DAM = dict(topk=8, dam_loss_weight=1.0)
EXACT_DAM = dict(feat_channels=128, shared_conv=False)  # three separate 128-wide 3x3 heads (before)
SEG_TAP = dict(student='decode_head.sep_bottleneck', teacher='decode_head.sep_bottleneck')
SEG_PG = dict(patches_per_side=16, group_size=4)
SEG_HIER = dict(type='HierarchicalTaTLoss', pool_size=4, patch_weight=0.1, anchor_weight=0.05, **SEG_PG)
SEG_CH = dict(student_channels=128, teacher_channels=512)
SEG_AP = dict(type='AnchorPointTaTLoss', pool_size=4, loss_weight=0.05, **SEG_CH)


def det_terms(dam: dict, hierarchical: bool = True) -> list:
    """Faster R-CNN _tat_dam: DAM around patch-group + anchor-point TaT on P2-P3, around full TaT on
    P4-P6. ``hierarchical``: one ``HierarchicalTaTLoss`` (shared embeddings, both terms masked) per
    level, as shipped; otherwise the form before it (DAM around a PatchGroupTaTLoss, next to an
    unmasked AnchorPointTaTLoss with its own embeddings)."""
    channels = dict(student_channels=256, teacher_channels=256)
    dam_cfg = dict(dam=dict(num_classes=NUM_CLASSES, **dam), **DAM)
    low_levels = []
    for level, pool_size in ((0, 8), (1, 4)):
        if hierarchical:
            losses = [dict(type='DAMDistillLoss', **channels, **dam_cfg, feature_loss=dict(
                type='HierarchicalTaTLoss', patch_size=8, group_size=4, pool_size=pool_size,
                patch_weight=1.0, anchor_weight=0.5))]
        else:
            losses = [dict(type='DAMDistillLoss', **channels, **dam_cfg,
                           feature_loss=dict(type='PatchGroupTaTLoss', patch_size=8, group_size=4)),
                      dict(type='AnchorPointTaTLoss', **channels, pool_size=pool_size, loss_weight=0.5)]
        low_levels.append(dict(student='neck', teacher='neck', index=level, losses=losses))
    return low_levels + [
        dict(student='neck', teacher='neck', index=[2, 3, 4], losses=[
            dict(type='DAMDistillLoss', **channels, feature_loss=dict(type='TaTLoss'), **dam_cfg)]),
    ]


# task: (scope, teacher config, student config, input size, {variant: (target, distill entries)}).
# ``before`` rows are the terms as shipped before HierarchicalTaTLoss and the cheap DAM default.
TASKS = {
    'cls': ('mmpretrain', 'mmpretrain::resnet/resnet34_8xb32_in1k.py',
            'mmpretrain::resnet/resnet18_8xb32_in1k.py', (224, 224), {
                'tat + kd': (0.12, [
                    dict(student='backbone.layer4', teacher='backbone.layer4',
                         losses=[dict(type='TaTLoss', student_channels=512, teacher_channels=512,
                                      loss_weight=0.1)]),
                    dict(student='head.fc', teacher='head.fc',
                         losses=[dict(type='KDLoss', loss_weight=0.5)]),
                ])}),
    'seg': ('mmseg', 'mmseg::deeplabv3plus/deeplabv3plus_r101-d8_4xb4-40k_voc12aug-512x512.py',
            'mmseg::deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py', (256, 256), {
                'tat, before: PG + AP losses, 2 embeddings': (None, [dict(SEG_TAP, losses=[
                    dict(type='PatchGroupTaTLoss', loss_weight=0.1, **SEG_PG, **SEG_CH), SEG_AP])]),
                'tat: HierarchicalTaTLoss': (0.30, [dict(SEG_TAP, losses=[dict(SEG_HIER, **SEG_CH)])]),
                'tat_dam, before: exact DAM around PG, AP global': (None, [dict(SEG_TAP, losses=[
                    dict(type='DAMDistillLoss', **SEG_CH,
                         feature_loss=dict(type='PatchGroupTaTLoss', loss_weight=0.1, **SEG_PG),
                         dam=dict(num_classes=1, **EXACT_DAM), **DAM), SEG_AP])]),
                'tat_dam: exact DAM around hierarchical': (None, [dict(SEG_TAP, losses=[
                    dict(type='DAMDistillLoss', **SEG_CH, feature_loss=SEG_HIER,
                         dam=dict(num_classes=1, **EXACT_DAM), **DAM)])]),
                'tat_dam: default DAM around hierarchical': (0.45, [dict(SEG_TAP, losses=[
                    dict(type='DAMDistillLoss', **SEG_CH, feature_loss=SEG_HIER,
                         dam=dict(num_classes=1), **DAM)])]),
            }),
    'det': ('mmdet', 'mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py',
            'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', (256, 320), {
                'tat_dam, before: exact DAM, PG + AP losses': (None, det_terms(EXACT_DAM, False)),
                'tat_dam, before: default DAM, PG + AP losses': (None, det_terms({}, False)),
                'tat_dam: default DAM around hierarchical on P2-P3': (0.15, det_terms({})),
            }),
}

# DAM head options measured on the real tapped features (DAMDistillLoss with the task's masked loss,
# forward + backward). ``feat_channels`` / ``shared_conv`` / ``stride`` of DAM.
DAM_OPTIONS = {
    'separate 3x3 heads, 128 wide (exact, before)': dict(feat_channels=128, shared_conv=False),
    'separate 3x3 heads, 64 wide': dict(feat_channels=64, shared_conv=False),
    'separate 3x3 heads, 128 wide, stride 2': dict(feat_channels=128, shared_conv=False, stride=2),
    'shared 3x3 conv, 128 wide': dict(feat_channels=128),
    'shared 3x3 conv, 64 wide (default)': dict(),
    'shared 3x3 conv, 32 wide': dict(feat_channels=32),
    'shared 3x3 conv, 64 wide, stride 2': dict(stride=2),
}
DAM_OPTION_TAPS = {  # task: (student tap, DAMDistillLoss config without dam)
    'seg': ('decode_head.sep_bottleneck',
            dict(type='DAMDistillLoss', **SEG_CH, feature_loss=SEG_HIER, **DAM)),
    'det': ('neck.0', dict(type='DAMDistillLoss', student_channels=256, teacher_channels=256,
                           feature_loss=dict(type='PatchGroupTaTLoss', patch_size=8, group_size=4),
                           **DAM)),
}


# Where and how the steps run: set once by main() from --device / --amp.
DEVICE = torch.device('cpu')
AMP = False


def synchronize() -> None:
    """Wait for the GPU's queued work (timings of asynchronous CUDA calls); nothing on CPU."""
    if DEVICE.type == 'cuda':
        torch.cuda.synchronize(DEVICE)


def optim_wrapper(params, lr: float = 1e-4) -> OptimWrapper:
    """SGD in an ``OptimWrapper``, or MMEngine's ``AmpOptimWrapper`` with ``--amp``."""
    wrapper = AmpOptimWrapper if AMP else OptimWrapper
    return wrapper(optimizer=torch.optim.SGD(params, lr=lr))


def amp_context():
    """float16 autocast with ``--amp`` (what AmpOptimWrapper's steps run under), else nothing."""
    return torch.autocast(DEVICE.type, dtype=torch.float16) if AMP else contextlib.nullcontext()


def interleaved_times(fns: dict, repeats: int) -> dict:
    """Times of each function in ``repeats`` interleaved rounds, so load changes hit all alike."""
    for fn in fns.values():
        fn()  # warm-up (allocator, lazy inits)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def medians(rounds: dict) -> dict:
    """Median of each function's times."""
    return {name: statistics.median(values) for name, values in rounds.items()}


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median time of each function over interleaved rounds."""
    return medians(interleaved_times(fns, repeats))


def bench_task(task: str, repeats: int, tmp: str) -> dict:
    import importlib
    scope, teacher_path, student_spec, size, variants = TASKS[task]
    registry = importlib.import_module(f'{scope}.registry').MODELS
    teacher_cfg = offline_model_config(teacher_path, NUM_CLASSES, size)
    student_cfg = offline_model_config(student_spec, NUM_CLASSES, size)
    ckpt = save_random_checkpoint(scope, teacher_cfg, f'{tmp}/{task}_teacher.pth')
    distillers = {}
    with DefaultScope.overwrite_default_scope(scope):
        torch.manual_seed(0)
        plain = registry.build(student_cfg).to(DEVICE).train()
        for name, (_, distill) in variants.items():
            torch.manual_seed(0)
            distillers[name] = registry.build(dict(
                type=dict(cls='ClsDistiller', seg='SegDistiller', det='DetDistiller')[task],
                student=student_cfg, teacher=dict(config=teacher_cfg, checkpoint=ckpt),
                distill=copy.deepcopy(distill))).to(DEVICE).train()
    batch = fake_batch(task, 2, size, NUM_CLASSES)
    plain_optim = optim_wrapper(plain.parameters())
    first = next(iter(distillers.values()))
    data = first.data_preprocessor(batch, True)

    def run_teacher():
        with amp_context():  # the teacher runs inside the step's autocast
            first._run_teacher(data['inputs'], data['data_samples'])

    fns = dict(student=lambda: plain.train_step(batch, plain_optim), teacher=run_teacher)
    for name, distiller in distillers.items():
        optim = optim_wrapper(distiller.parameters())
        fns[name] = lambda d=distiller, o=optim: d.train_step(batch, o)
    rounds = interleaved_times(fns, repeats)
    times = medians(rounds)
    t_student, t_teacher = times['student'], times['teacher']
    student_flops = count_flops(fns['student'])
    rows = []
    for name, (target, _) in variants.items():
        # the difference is taken within each round (same load for all three), then the median
        overhead = statistics.median(d - s - t for d, s, t in zip(
            rounds[name], rounds['student'], rounds['teacher']))
        per_loss, per_loss_flops = per_loss_times(distillers[name], data, repeats)
        rows.append(dict(variant=name, target=target, distill=times[name], overhead=overhead,
                         ratio=overhead / t_student, per_loss=per_loss,
                         flop_share=sum(per_loss_flops.values()) / student_flops))
    dam_options = dam_option_times(task, first, data, repeats) if task in DAM_OPTION_TAPS else {}
    return dict(task=task, size=size, student=t_student, teacher=t_teacher, variants=rows,
                dam_options=dam_options)


def tap_features(distiller, data) -> tuple:
    """{student tap: feature}, {student tap: teacher feature} of a distiller's pairs."""
    with amp_context():  # float16 features with --amp, as the step's losses get them
        student_feats, teacher_feats = distiller.tapped_features(data['inputs'],
                                                                 data['data_samples'])
    return ({pair.student_tap: student_feats[pair.student_tap] for pair in distiller.pairs},
            {pair.student_tap: teacher_feats[pair.teacher_tap].float() for pair in distiller.pairs})


def time_loss(loss, s_feat, t_feat):
    """A closure running one forward + backward of a loss (dict losses summed)."""
    s_feat = s_feat.detach().requires_grad_()

    def run():
        with amp_context():
            out = loss(s_feat, t_feat)
        (sum(out.values()) if isinstance(out, dict) else out).backward()
    return run


def count_flops(fn) -> int:
    """Floating-point operations torch counts for one call of ``fn`` (matmuls and convolutions,
    forward and backward): the arithmetic share, which no machine load changes."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def per_loss_times(distiller, data, repeats: int) -> tuple:
    """Forward+backward time and FLOPs of each configured loss alone, on the real tapped features."""
    s_feats, t_feats = tap_features(distiller, data)
    fns = {}
    for pair in distiller.pairs:
        for name, loss in zip(pair.loss_names, pair.losses):
            fns[f'{name}.{pair.student_tap}'] = time_loss(loss, s_feats[pair.student_tap],
                                                           t_feats[pair.student_tap])
    return interleaved_medians(fns, repeats), {name: count_flops(fn) for name, fn in fns.items()}


def dam_option_times(task: str, distiller, data, repeats: int) -> dict:
    """DAMDistillLoss (the task's masked loss inside) with each DAM head option, same features."""
    tap, cfg = DAM_OPTION_TAPS[task]
    s_feats, t_feats = tap_features(distiller, data)
    fns = {}
    num_classes = 1 if task == 'seg' else NUM_CLASSES
    for name, option in DAM_OPTIONS.items():
        torch.manual_seed(0)
        loss = ROOT_MODELS.build(dict(cfg, dam=dict(num_classes=num_classes, **option))).to(DEVICE)
        fns[name] = time_loss(loss, s_feats[tap], t_feats[tap])
    return interleaved_medians(fns, repeats)


def dafa_terms(distill: list, search_iters: int, task: str) -> list:
    """``distill`` with every feature loss (not KD) wrapped in ``DAFADistillLoss``."""
    # det's P6 is 4x5 at 256x320: too small for Cutout (0.2 of the side), which is left out there.
    operations = None if task != 'det' else [
        'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate', 'Noise', 'ChannelShuffle',
        'ChannelDrop']
    out = copy.deepcopy(distill)
    for entry in out:
        # several wrapped losses on one tap need distinct log names (dafa, dafa1, ...)
        entry['losses'] = [loss if loss['type'] == 'KDLoss' else dict(
            type='DAFADistillLoss', feature_loss=loss, name='dafa' + (str(i) if i else ''),
            search=dict(search_iters=search_iters, operations=operations))
            for i, loss in enumerate(entry['losses'])]
    return out


def bench_dafa(task: str, repeats: int, tmp: str) -> dict:
    """DAFA's cost: plain distillation step vs. DAFA normal step vs. DAFA search step.

    The task's last variant (the shipped terms) is the plain step; DAFA wraps its feature losses.
    A search step is the bi-level step (virtual step, un-augmented pass, two finite-difference
    passes, then the normal step); a normal step samples the policy and augments the teacher.
    """
    import importlib

    from mmengine.optim import build_optim_wrapper
    scope, teacher_path, student_spec, size, variants = TASKS[task]
    registry = importlib.import_module(f'{scope}.registry').MODELS
    teacher_cfg = offline_model_config(teacher_path, NUM_CLASSES, size)
    student_cfg = offline_model_config(student_spec, NUM_CLASSES, size)
    ckpt = save_random_checkpoint(scope, teacher_cfg, f'{tmp}/{task}_teacher.pth')
    plain_terms = list(variants.values())[-1][1]
    kinds = {'plain': plain_terms, 'dafa normal': dafa_terms(plain_terms, 0, task),
             'dafa search': dafa_terms(plain_terms, 10**9, task)}
    fns = {}
    batch = fake_batch(task, 2, size, NUM_CLASSES)
    for name, distill in kinds.items():
        with DefaultScope.overwrite_default_scope(scope):
            torch.manual_seed(0)
            model = registry.build(dict(
                type=dict(cls='ClsDistiller', seg='SegDistiller', det='DetDistiller')[task],
                student=student_cfg, teacher=dict(config=teacher_cfg, checkpoint=ckpt),
                distill=distill)).to(DEVICE).train()
            optim_cfg = dict(optimizer=dict(type='SGD', lr=1e-4, momentum=0.9))
            if AMP:
                optim_cfg['type'] = 'AmpOptimWrapper'
            if name != 'plain':
                optim_cfg['constructor'] = 'DAFAOptimWrapperConstructor'
            optim = build_optim_wrapper(model, optim_cfg)
        fns[name] = lambda m=model, o=optim: m.train_step(batch, o)
    times = interleaved_medians(fns, repeats)
    return dict(task=task, size=size, **times)


def main_dafa(args) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            rows.append(bench_dafa(task, args.repeats, tmp))
    print(f'\nDAFA, batch 2, {device_label()}, {torch.get_num_threads()} threads, median of {args.repeats}; '
          f'load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n')
    print('| task | input | distill step (s) | DAFA normal step (s) | ratio | DAFA search step (s) '
          '| ratio |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['task']} | {r['size'][0]}x{r['size'][1]} | {r['plain']:.3f} | "
              f"{r['dafa normal']:.3f} | {r['dafa normal'] / r['plain']:.2f}x | "
              f"{r['dafa search']:.3f} | {r['dafa search'] / r['plain']:.2f}x |")


def device_label() -> str:
    """'CPU', or the GPU's name, plus ', AMP (float16)' with --amp."""
    name = 'CPU' if DEVICE.type == 'cpu' else torch.cuda.get_device_name(DEVICE)
    return name + (', AMP (float16)' if AMP else ', float32')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=list(TASKS))
    parser.add_argument('--dafa', action='store_true',
                        help="only DAFA's cost: normal and search step vs. the distillation step")
    parser.add_argument('--device', default='cpu', help="where to run: 'cpu' (default) or 'cuda'")
    parser.add_argument('--amp', action='store_true',
                        help='time AmpOptimWrapper steps (float16 autocast + loss scaler; GPU only)')
    args = parser.parse_args()
    global DEVICE, AMP
    DEVICE, AMP = torch.device(args.device), args.amp
    if DEVICE.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: torch.cuda.is_available() is False on this machine.')
    if AMP and DEVICE.type != 'cuda':
        parser.error('--amp times MMEngine\'s AmpOptimWrapper, which needs a GPU: add --device cuda.')
    if args.dafa:
        return main_dafa(args)
    torch.manual_seed(0)
    results = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            results.append(bench_task(task, args.repeats, tmp))
    load_after = os.getloadavg()
    print(f'\nbatch 2, {device_label()}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY='
          f"{os.environ.get('OMP_WAIT_POLICY')}, median of {args.repeats} (torch {torch.__version__}); "
          f'load average 1/5/15 min before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}'
          f', after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} '
          f'on {os.cpu_count()} CPUs\n')
    print('| task | input | terms | student step (s) | teacher fwd (s) | distill step (s) | '
          'distill terms (s) | terms / student step | losses alone / student step | '
          'losses\' FLOPs / student step\'s | target |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for r in results:
        for v in r['variants']:
            target = '' if v['target'] is None else (
                f"<= {100 * v['target']:.0f}% " + ('met' if v['ratio'] <= v['target'] else 'MISSED'))
            print(f"| {r['task']} | {r['size'][0]}x{r['size'][1]} | {v['variant']} | {r['student']:.3f} | "
                  f"{r['teacher']:.3f} | {v['distill']:.3f} | {v['overhead']:.3f} | "
                  f"{100 * v['ratio']:.1f}% | {100 * sum(v['per_loss'].values()) / r['student']:.1f}% | "
                  f"{100 * v['flop_share']:.1f}% | {target} |")
    print('\nEach loss alone (forward + backward on the tapped features), as % of the student step:\n')
    print('| task | terms | loss | time (s) | % of student step |')
    print('|---|---|---|---|---|')
    for r in results:
        for v in r['variants']:
            for name, seconds in v['per_loss'].items():
                print(f"| {r['task']} | {v['variant']} | {name} | {seconds:.3f} | "
                      f"{100 * seconds / r['student']:.1f}% |")
    print('\nDAM head options: DAMDistillLoss with the masked loss, forward + backward on the real '
          'tapped features:\n')
    print('| task | tap | DAM heads | time (s) | % of student step |')
    print('|---|---|---|---|---|')
    for r in results:
        for name, seconds in r['dam_options'].items():
            print(f"| {r['task']} | {DAM_OPTION_TAPS[r['task']][0]} | {name} | {seconds:.3f} | "
                  f"{100 * seconds / r['student']:.1f}% |")


if __name__ == '__main__':
    main()
