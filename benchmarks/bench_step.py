"""Cost of distillation per train step, measured side by side in one run, for each task.

For each task it times, on the same batch:
  * one plain student train step (data preprocessor, forward, backward, SGD step);
  * one teacher forward as the distiller runs it (no grad, stopped after the last tap);
  * one distillation train step (teacher forward + student step + distillation terms);
and prints the distillation terms' own cost (losses, embeddings, DAM), i.e.
``distill step - student step - teacher forward``, as a fraction of the student step.
Target: under 10%.

    .venv/bin/python benchmarks/bench_step.py [--repeats 5] [--tasks cls seg det]
"""
import argparse
import statistics
import tempfile
import time

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope

import tat_mm  # noqa: F401
from tat_mm.testing import fake_batch, offline_model_config, save_random_checkpoint

NUM_CLASSES = 10

# The distillation terms of the shipped configs (configs/{cls,seg,det}/*_tat_dam.py; cls: *_tat.py
# plus KD), on small inputs.
DAM = dict(topk=8, dam_loss_weight=1.0)
TASKS = {
    # task: (scope, teacher config, student config or overrides, input size, distill entries)
    'cls': ('mmpretrain', 'mmpretrain::resnet/resnet34_8xb32_in1k.py',
            'mmpretrain::resnet/resnet18_8xb32_in1k.py', (224, 224), [
                dict(student='backbone.layer4', teacher='backbone.layer4',
                     losses=[dict(type='TaTLoss', student_channels=512, teacher_channels=512,
                                  loss_weight=0.1)]),
                dict(student='head.fc', teacher='head.fc', losses=[dict(type='KDLoss', loss_weight=0.5)]),
            ]),
    'seg': ('mmseg', 'mmseg::deeplabv3plus/deeplabv3plus_r101-d8_4xb4-40k_voc12aug-512x512.py',
            'mmseg::deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py', (256, 256), [
                dict(student='decode_head.sep_bottleneck', teacher='decode_head.sep_bottleneck',
                     losses=[
                         dict(type='DAMDistillLoss', student_channels=128, teacher_channels=512,
                              feature_loss=dict(type='PatchGroupTaTLoss', patches_per_side=16,
                                                group_size=4, loss_weight=0.1),
                              dam=dict(num_classes=1, feat_channels=128), **DAM),
                         dict(type='AnchorPointTaTLoss', student_channels=128, teacher_channels=512,
                              pool_size=4, loss_weight=0.05),
                     ]),
            ]),
    'det': ('mmdet', 'mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py',
            'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', (256, 320), [
                dict(student='neck', teacher='neck', index=[0, 1],
                     losses=[
                         dict(type='DAMDistillLoss', student_channels=256, teacher_channels=256,
                              feature_loss=dict(type='PatchGroupTaTLoss', patch_size=8,
                                                group_size=4),
                              dam=dict(num_classes=NUM_CLASSES, feat_channels=128), **DAM),
                         dict(type='AnchorPointTaTLoss', student_channels=256, teacher_channels=256,
                              pool_size=4, loss_weight=0.5),
                     ]),
                dict(student='neck', teacher='neck', index=[2, 3, 4],
                     losses=[
                         dict(type='DAMDistillLoss', student_channels=256, teacher_channels=256,
                              feature_loss=dict(type='TaTLoss'),
                              dam=dict(num_classes=NUM_CLASSES, feat_channels=128), **DAM),
                     ]),
            ]),
}


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median time of each function, timed in interleaved rounds so load changes hit all alike."""
    for fn in fns.values():
        fn()  # warm-up (allocator, lazy inits)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_task(task: str, repeats: int, tmp: str) -> dict:
    import importlib
    scope, teacher_path, student_spec, size, distill = TASKS[task]
    registry = importlib.import_module(f'{scope}.registry').MODELS
    teacher_cfg = offline_model_config(teacher_path, NUM_CLASSES, size)
    student_cfg = offline_model_config(student_spec, NUM_CLASSES, size)
    ckpt = save_random_checkpoint(scope, teacher_cfg, f'{tmp}/{task}_teacher.pth')
    with DefaultScope.overwrite_default_scope(scope):
        torch.manual_seed(0)
        plain = registry.build(student_cfg).train()
        distiller = registry.build(dict(
            type=dict(cls='ClsDistiller', seg='SegDistiller', det='DetDistiller')[task],
            student=student_cfg, teacher=dict(config=teacher_cfg, checkpoint=ckpt),
            distill=distill)).train()
    batch = fake_batch(task, 2, size, NUM_CLASSES)
    plain_optim = OptimWrapper(torch.optim.SGD(plain.parameters(), lr=1e-4))
    distill_optim = OptimWrapper(torch.optim.SGD(distiller.parameters(), lr=1e-4))
    data = distiller.data_preprocessor(batch, True)

    times = interleaved_medians(dict(
        student=lambda: plain.train_step(batch, plain_optim),
        teacher=lambda: distiller._run_teacher(data['inputs'], data['data_samples']),
        distill=lambda: distiller.train_step(batch, distill_optim)), repeats)
    t_student, t_teacher, t_distill = times['student'], times['teacher'], times['distill']
    overhead = t_distill - t_student - t_teacher
    return dict(task=task, size=size, student=t_student, teacher=t_teacher, distill=t_distill,
                overhead=overhead, ratio=overhead / t_student,
                per_loss=per_loss_times(distiller, data, repeats))


def per_loss_times(distiller, data, repeats: int) -> dict:
    """Forward+backward time of each configured loss alone, on the real tapped features."""
    student_feats, teacher_feats = distiller.tapped_features(data['inputs'], data['data_samples'])
    fns = {}
    for pair in distiller.pairs:
        s_feat = student_feats[pair.student_tap].requires_grad_()
        t_feat = teacher_feats[pair.teacher_tap].float()
        for name, loss in zip(pair.loss_names, pair.losses):
            def run(loss=loss, s_feat=s_feat, t_feat=t_feat):
                out = loss(s_feat, t_feat)
                (sum(out.values()) if isinstance(out, dict) else out).backward()
            fns[f'{name}.{pair.student_tap}'] = run
    return interleaved_medians(fns, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=list(TASKS))
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            rows.append(bench_task(task, args.repeats, tmp))
    print(f'\nbatch 2, CPU, {torch.get_num_threads()} threads, median of {args.repeats} '
          f'(torch {torch.__version__})\n')
    print('| task | input | student step (s) | teacher fwd (s) | distill step (s) | '
          'distill terms (s) | terms / student step |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['task']} | {r['size'][0]}x{r['size'][1]} | {r['student']:.3f} | "
              f"{r['teacher']:.3f} | {r['distill']:.3f} | {r['overhead']:.3f} | "
              f"{100 * r['ratio']:.1f}% |")
    print('\nEach loss alone (forward + backward on the tapped features), as % of the student step:\n')
    print('| task | loss | time (s) | % of student step |')
    print('|---|---|---|---|')
    for r in rows:
        for name, seconds in r['per_loss'].items():
            print(f"| {r['task']} | {name} | {seconds:.3f} | {100 * seconds / r['student']:.1f}% |")


if __name__ == '__main__':
    main()
