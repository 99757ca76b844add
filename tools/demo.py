"""The one-command demo: teacher, student alone, TaT, TaT+DAM and FitNet on the built-in digits.

    python tools/demo.py [--quick] [--tasks cls seg det] [--seeds 0 1 2] [--work-dir work_dirs/demo]

For each task (configs in ``configs/demo/<task>/``) it

1. trains the teacher once (seed 0), or reuses ``<work-dir>/<task>/teacher/teacher.pth`` when present;
2. trains the student alone, with TaT, with TaT wrapped in DAM and with FitNet, once per seed;
3. evaluates every model with the upstream metric through the runner's val loop (top-1 accuracy
   for cls, mIoU for seg, COCO bbox mAP for det, all on the fixed val split);
4. prints the results table (mean +- sample std over seeds, plus the teacher) and writes it to
   ``<work-dir>/results.md`` and ``<work-dir>/results.json``;
5. draws the figures into ``<work-dir>/figures/`` (see ``tools/visualize.py``).

Every run is an MMEngine ``Runner`` in this process (no re-import per run); its work dir is
``<work-dir>/<task>/<method>/seed<k>/`` with the usual logs, ``vis_data/scalars.json`` and the final
checkpoint, plus ``demo_run.json`` (config, overrides, checkpoint, metrics) that
``tools/visualize.py`` reads. The canvases of seg / det are written once to ``<work-dir>/data/``.

``--quick`` (CI): 3 iterations per run on 16 training / 8 validation images, one seed by default.
It exercises everything end to end in about a minute or two; its numbers mean nothing (the table
header says so).
"""
import argparse
import gc
import json
import os
import os.path as osp
import sys
import time

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:  # `python tools/demo.py` from anywhere, even without `pip install -e .`
    sys.path.insert(0, REPO)

TASKS = ('cls', 'seg', 'det')
METHODS = ('student', 'tat', 'tat_dam', 'fitnet')
METHOD_NAMES = {
    'teacher': 'teacher',
    'student': 'student alone',
    'tat': 'student + TaT',
    'tat_dam': 'student + TaT + DAM',
    'fitnet': 'student + FitNet',
}
# metric key in the evaluator's output, display name, scale to percent
METRICS = {
    'cls': ('accuracy/top1', 'top-1 accuracy (%)', 1.0),
    'seg': ('mIoU', 'mIoU (%)', 1.0),
    'det': ('coco/bbox_mAP', 'COCO bbox mAP (%)', 100.0),
}
TASK_NAMES = {'cls': 'classification', 'seg': 'semantic segmentation', 'det': 'detection'}
QUICK_ITERS = 3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='tiny schedules and data subsets (CI); numbers are meaningless')
    parser.add_argument('--tasks', nargs='+', choices=TASKS, default=list(TASKS))
    parser.add_argument('--seeds', nargs='+', type=int, default=None,
                        help='student seeds (default: 0 1 2; with --quick: 0)')
    parser.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS),
                        help='student runs to do (default: all)')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--retrain-teacher', action='store_true',
                        help='train the teacher even if a cached checkpoint exists')
    parser.add_argument('--no-figures', action='store_true', help='skip the PNGs')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch\'s choice, one per core); 1 is '
                        'much faster on a machine shared with other jobs')
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    args.work_dir = osp.abspath(args.work_dir)
    return args


def config_path(task: str, method: str) -> str:
    return osp.join(REPO, 'configs', 'demo', task, f'{method}.py')


def run_options(task: str, method: str, seed: int, work_dir: str, quick: bool,
                teacher_ckpt: str = None) -> dict:
    """The overrides (``Config.merge_from_dict`` keys) of one demo run."""
    opts = {'randomness.seed': seed, 'log_level': 'INFO'}
    if task in ('seg', 'det'):
        data_root = osp.join(work_dir, 'data', 'digits') + '/'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            opts[f'{loader}.dataset.data_root'] = data_root
        if task == 'det':
            ann = data_root + 'annotations/instances_val.json'
            opts['val_evaluator.ann_file'] = ann
            opts['test_evaluator.ann_file'] = ann
    if method not in ('teacher', 'student'):
        opts['model.teacher.config'] = config_path(task, 'teacher')
        opts['model.teacher.checkpoint'] = teacher_ckpt
    if quick:
        opts.update({
            'train_cfg.max_iters': QUICK_ITERS,
            'train_cfg.val_interval': QUICK_ITERS,
            'default_hooks.checkpoint.interval': QUICK_ITERS,
            'default_hooks.logger.interval': 1,
            'train_dataloader.batch_size': 4,
            'train_dataloader.dataset.indices': 16,
            'val_dataloader.dataset.indices': 8,
            'test_dataloader.dataset.indices': 8,
        })
    return opts


def build_cfg(task: str, method: str, opts: dict, run_dir: str):
    from mmengine.config import Config
    cfg = Config.fromfile(config_path(task, method))
    cfg.merge_from_dict(opts)
    cfg.work_dir = run_dir
    cfg.experiment_name = f'{task}_{method}_{osp.basename(run_dir)}'
    if cfg.get('visualizer') is not None:
        # mmseg / mmdet name their visualizer 'visualizer': a second runner in this process would
        # get the first one's instance (and write its scalars into the first run's log dir).
        cfg.visualizer.name = f'{cfg.experiment_name}_{time.time():.6f}'
    return cfg


def _quiet_runner_class():
    """MMEngine's Runner without the environment / full-config dump at start (still in the work
    dir as the dumped config): keeps the console to iterations, ETA and metrics."""
    from mmengine.runner import Runner

    class DemoRunner(Runner):

        def _log_env(self, env_cfg):
            pass

    return DemoRunner


class MetricCatcher:
    """A hook object that keeps the last validation metrics of a runner."""
    priority = 'LOWEST'

    def __init__(self):
        self.metrics = None

    def __getattr__(self, name):  # every other hook point: do nothing
        if name.startswith(('before_', 'after_')):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def after_val_epoch(self, runner, metrics=None):
        self.metrics = dict(metrics or {})


def train_one(task: str, method: str, seed: int, run_dir: str, opts: dict) -> dict:
    """Train one model with an MMEngine runner and return its final val metrics."""
    import torch
    from mmengine.hooks import Hook
    cfg = build_cfg(task, method, opts, run_dir)
    runner_cls = _quiet_runner_class()
    runner = runner_cls.from_cfg(cfg)

    catcher = type('DemoMetricCatcher', (MetricCatcher, Hook), {})()
    runner.register_hook(catcher, priority='LOWEST')
    runner.train()
    ckpt = osp.join(run_dir, f'iter_{runner.iter}.pth')
    metrics = catcher.metrics or {}
    if task == 'det' and not metrics:
        # CocoMetric returns nothing when no box passed the score threshold: that is mAP 0.
        metrics = {'coco/bbox_mAP': 0.0, 'note': 'no detections'}
    info = dict(task=task, method=method, seed=seed, config=config_path(task, method),
                options=opts, checkpoint=ckpt, metrics=metrics,
                log_dir=runner.log_dir)
    with open(osp.join(run_dir, 'demo_run.json'), 'w') as f:
        json.dump(info, f, indent=1, default=float)
    del runner
    gc.collect()
    torch.set_grad_enabled(True)
    return info


def save_teacher(src: str, dst: str) -> None:
    """Keep only the weights (no optimizer state) as the teacher checkpoint the distillers load."""
    import torch
    ckpt = torch.load(src, map_location='cpu', weights_only=False)
    torch.save({'meta': ckpt.get('meta', {}), 'state_dict': ckpt['state_dict']}, dst)


def log(msg: str) -> None:
    print(f'[demo {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def run_task(task: str, args) -> dict:
    key, metric_name, scale = METRICS[task]
    task_dir = osp.join(args.work_dir, task)
    teacher_dir = osp.join(task_dir, 'teacher')
    teacher_ckpt = osp.join(teacher_dir, 'teacher.pth')
    teacher_json = osp.join(teacher_dir, 'demo_run.json')
    result = dict(task=task, metric=metric_name, runs={}, times={})
    task_start = time.time()

    if osp.isfile(teacher_ckpt) and osp.isfile(teacher_json) and not args.retrain_teacher:
        with open(teacher_json) as f:
            info = json.load(f)
        log(f'{task}/teacher: reusing {teacher_ckpt} ({metric_name} '
            f'{info["metrics"].get(key, float("nan")) * scale:.2f})')
        result['teacher_cached'] = True
    else:
        log(f'{task}/teacher: training ({config_path(task, "teacher")})')
        t0 = time.time()
        opts = run_options(task, 'teacher', 0, args.work_dir, args.quick)
        info = train_one(task, 'teacher', 0, teacher_dir, opts)
        save_teacher(info['checkpoint'], teacher_ckpt)
        info['checkpoint'] = teacher_ckpt
        info['train_time_s'] = time.time() - t0
        with open(teacher_json, 'w') as f:
            json.dump(info, f, indent=1, default=float)
        log(f'{task}/teacher: finished in {info["train_time_s"]:.1f} s, {metric_name} '
            f'{info["metrics"].get(key, float("nan")) * scale:.2f}')
        result['teacher_cached'] = False
    result['teacher'] = info['metrics'].get(key, float('nan')) * scale
    result['teacher_time_s'] = info.get('train_time_s')

    for method in args.methods:
        values, times = [], []
        for seed in args.seeds:
            run_dir = osp.join(task_dir, method, f'seed{seed}')
            log(f'{task}/{method} seed {seed}: started')
            t0 = time.time()
            opts = run_options(task, method, seed, args.work_dir, args.quick, teacher_ckpt)
            info = train_one(task, method, seed, run_dir, opts)
            elapsed = time.time() - t0
            value = info['metrics'].get(key, float('nan')) * scale
            values.append(value)
            times.append(elapsed)
            log(f'{task}/{method} seed {seed}: finished in {elapsed:.1f} s, {metric_name} {value:.2f}')
        result['runs'][method] = values
        result['times'][method] = times
    result['total_time_s'] = time.time() - task_start

    if not args.no_figures:
        from tat_mm.visualization.demo_figures import make_task_figures
        t0 = time.time()
        try:
            files = make_task_figures(task, args.work_dir, osp.join(args.work_dir, 'figures'))
            result['figures'] = [osp.relpath(p, args.work_dir) for p in files]
            log(f'{task}: {len(files)} figures in {time.time() - t0:.1f} s')
        except Exception as exc:  # a figure must not lose the measured table
            import traceback
            traceback.print_exc()
            result['figures_error'] = repr(exc)
            log(f'{task}: figures FAILED: {exc!r}')
    return result


def mean_std(values):
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else float('nan')
    return float(arr.mean()), std


def format_table(results: dict, args) -> str:
    lines = []
    if args.quick:
        lines.append('> **QUICK MODE (CI smoke test): tiny schedules on 16 training images; these '
                     'numbers are meaningless.**\n')
    lines.append(f'Seeds: {" ".join(map(str, args.seeds))} (students); teacher: seed 0. '
                 'Mean ± sample std over seeds; val split of the built-in digits.\n')
    for task, res in results.items():
        lines.append(f'### {TASK_NAMES[task]} ({task}): {res["metric"]}\n')
        lines.append('| model | mean ± std | per seed | train time per run (s) |')
        lines.append('|---|---|---|---|')
        cached = ' (cached)' if res.get('teacher_cached') else ''
        t_time = res.get('teacher_time_s')
        lines.append(f'| teacher{cached} | {res["teacher"]:.2f} | – | '
                     f'{"–" if t_time is None else f"{t_time:.0f}"} |')
        for method, values in res['runs'].items():
            mean, std = mean_std(values)
            per = ', '.join(f'{v:.2f}' for v in values)
            std_s = 'n/a' if np.isnan(std) else f'{std:.2f}'
            t = np.mean(res['times'][method])
            lines.append(f'| {METHOD_NAMES[method]} | {mean:.2f} ± {std_s} | {per} | {t:.0f} |')
        lines.append(f'\nTotal wall time for {task}: {res["total_time_s"] / 60:.1f} min.\n')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    import tat_mm  # noqa: F401  (registries + stack fixes)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    start = time.time()
    log(f'work dir {args.work_dir}; tasks {args.tasks}; seeds {args.seeds}'
        f'{"; QUICK mode" if args.quick else ""}')
    results = {}
    for task in args.tasks:
        results[task] = run_task(task, args)
        # write after every task, so a long run shows its finished tasks
        table = format_table(results, args)
        with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
            f.write('# tat_mm demo results\n\n' + table + '\n')
        with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
            json.dump(dict(quick=args.quick, seeds=args.seeds, results=results), f, indent=1,
                      default=float)
    total = time.time() - start
    with open(osp.join(args.work_dir, 'results.md'), 'a') as f:
        f.write(f'\nTotal demo wall time: {total / 60:.1f} min.\n')
    print('\n' + table + f'\nTotal demo wall time: {total / 60:.1f} min.\n'
          f'Written: {osp.join(args.work_dir, "results.md")}, results.json, figures/', flush=True)


if __name__ == '__main__':
    main()
