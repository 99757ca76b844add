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
import use_venv  # noqa: F401,I001  (first: re-runs this tool with ./.venv/bin/python if needed)
import argparse
import gc
import json
import os
import os.path as osp
import sys
import time
import warnings

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:  # `python tools/demo.py` from anywhere, even without `pip install -e .`
    sys.path.insert(0, REPO)

TASKS = ('cls', 'seg', 'det')
METHODS = ('student', 'kd', 'fitnet', 'tat', 'tat_dam')
# Not run by default: TaT + SoKD's DAFA (classification only: configs/demo/cls/tat_dafa.py).
EXTRA_METHODS = ('tat_dafa',)
METHOD_NAMES = {
    'teacher': 'teacher',
    'student': 'student alone',
    'kd': 'student + KD',
    'fitnet': 'student + FitNet',
    'tat': 'student + TaT',
    'tat_dam': 'student + TaT + DAM',
    'tat_dafa': 'student + TaT + DAFA',
    'tat_T4': 'student + TaT, T = 4 (not the paper)',
    'tat_T16': 'student + TaT, T = 16 (not the paper)',
}
# RetinaNet's classifier conv runs once per FPN level with sigmoid outputs: softmax KD on one
# tap does not apply, so the detection demo has no KD run.
SKIP = {('det', 'kd'), ('seg', 'tat_dafa'), ('det', 'tat_dafa')}
PAIRS = ('r18', 'r50')
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
                        help='tiny schedules and data subsets (CI); numbers are meaningless. '
                        'Writes to work_dirs/demo_quick unless --work-dir is given')
    parser.add_argument('--tasks', nargs='+', choices=TASKS, default=list(TASKS))
    parser.add_argument('--seeds', nargs='+', type=int, default=[0],
                        help='student seeds (default: 0; the 5-seed protocol is tools/evidence.py)')
    parser.add_argument('--methods', nargs='+', choices=METHODS + EXTRA_METHODS,
                        default=list(METHODS),
                        help=f'student runs to do (default: {" ".join(METHODS)}; tat_dafa: '
                        'classification only)')
    parser.add_argument('--pair', choices=PAIRS, default='r18',
                        help='teacher: r18 (same family as the student, 4x wider; default) or r50 '
                        '(deeper, bottleneck blocks). Default work dir: work_dirs/demo[_r50]')
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--retrain-teacher', action='store_true',
                        help='train the teacher even if a cached checkpoint exists')
    parser.add_argument('--pretrained-student', action='store_true',
                        help='the regime of evidence protocol v3, for the first seed: the r50 '
                        'teacher trained on the whole train pool, the student alone trained '
                        '(stage 1), then continued from its checkpoint with each method and '
                        'without (the control); prints test scores against both. Default work '
                        'dir: work_dirs/demo_pretrained')
    parser.add_argument('--no-figures', action='store_true', help='skip the PNGs')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1, measured fastest on a shared 2-core '
                        'machine: see docs/demo.md)')
    args = parser.parse_args(argv)
    if args.work_dir is None:
        args.work_dir = osp.join('work_dirs', 'demo_quick' if args.quick else 'demo')
        if args.pretrained_student:
            args.work_dir += '_pretrained'
        elif args.pair != 'r18':
            args.work_dir += f'_{args.pair}'
    args.work_dir = osp.abspath(args.work_dir)
    return args


class Progress:
    """Counts finished runs and prints an overall ETA (teacher and student runs timed apart)."""

    def __init__(self, num_teachers: int, num_students: int):
        self.left = dict(teacher=num_teachers, student=num_students)
        self.times = dict(teacher=[], student=[])

    def done(self, kind: str, seconds) -> None:
        self.left[kind] -= 1
        if seconds is not None:
            self.times[kind].append(seconds)

    def __call__(self) -> str:
        if not self.times['student'] and not self.times['teacher']:
            return ''
        # Before the first run of a kind, assume a teacher costs 4 student runs (measured ratio).
        student = (np.mean(self.times['student']) if self.times['student'] else
                   np.mean(self.times['teacher']) / 4)
        teacher = np.mean(self.times['teacher']) if self.times['teacher'] else 4 * student
        eta = self.left['teacher'] * teacher + self.left['student'] * student
        return f' (demo ETA {eta / 60:.1f} min)'


def config_path(task: str, method: str) -> str:
    return osp.join(REPO, 'configs', 'demo', task, f'{method}.py')


def teacher_name(pair: str) -> str:
    """The teacher config of a pair: ``teacher.py`` (r18, same family as the student) or
    ``teacher_r50.py`` (deeper, bottleneck blocks)."""
    return 'teacher' if pair == 'r18' else f'teacher_{pair}'


def run_options(task: str, method: str, seed: int, work_dir: str, quick: bool,
                teacher_ckpt: str = None, teacher: str = 'teacher') -> dict:
    """The overrides (``Config.merge_from_dict`` keys) of one demo run."""
    opts = {'randomness.seed': seed, 'log_level': 'INFO'}
    if task in ('seg', 'det'):
        data_root = osp.join(work_dir, 'data', 'digits') + '/'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            opts[f'{loader}.dataset.data_root'] = data_root
        if task == 'det':
            opts['val_evaluator.ann_file'] = data_root + 'annotations/instances_val.json'
            opts['test_evaluator.ann_file'] = data_root + 'annotations/instances_test.json'
    if method not in ('teacher', 'student'):
        opts['model.teacher.config'] = config_path(task, teacher)
        opts['model.teacher.checkpoint'] = teacher_ckpt
    if quick:
        opts.update({
            'train_cfg.max_iters': QUICK_ITERS,
            'train_cfg.val_interval': QUICK_ITERS,
            'default_hooks.checkpoint.interval': QUICK_ITERS,
            'train_dataloader.batch_size': 4,
            # no DemoTeacherCheckHook: in quick mode the quick teacher is expected
            'custom_hooks': ([dict(type='DistillVisualizationHook', interval=QUICK_ITERS)]
                             if method in ('tat', 'tat_dam', 'tat_dafa') else []),
            'train_dataloader.dataset.indices': 16,
            'val_dataloader.dataset.indices': 8,
            'test_dataloader.dataset.indices': 8,
            'default_hooks.logger.interval': 1,
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
    """MMEngine's Runner without the environment dump and the hook table at start (both stay in
    the work dir's log and dumped config): keeps the console to iterations, ETA and metrics."""
    from mmengine.runner import Runner

    class DemoRunner(Runner):

        def _log_env(self, env_cfg):
            pass

        def get_hooks_info(self) -> str:
            return '(hook table omitted by tools/demo.py)'

    return DemoRunner


class MetricCatcher:
    """A hook object that keeps the last validation and test metrics of a runner."""
    priority = 'LOWEST'

    def __init__(self):
        self.metrics = None
        self.test_metrics = None

    def __getattr__(self, name):  # every other hook point: do nothing
        if name.startswith(('before_', 'after_')):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def after_val_epoch(self, runner, metrics=None):
        self.metrics = dict(metrics or {})

    def after_test_epoch(self, runner, metrics=None):
        self.test_metrics = dict(metrics or {})


def _no_detections(task: str, metrics: dict) -> dict:
    if task == 'det' and not metrics:
        # CocoMetric returns nothing when no box passed the score threshold: that is mAP 0.
        return {'coco/bbox_mAP': 0.0, 'note': 'no detections'}
    return metrics


def train_one(task: str, method: str, seed: int, run_dir: str, opts: dict,
              evaluate_test: bool = False, teacher_record: dict = None) -> dict:
    """Train one model with an MMEngine runner and return its final val (and test) metrics.

    Args:
        task (str): 'cls', 'seg' or 'det'.
        method (str): Config name in ``configs/demo/<task>/`` (e.g. 'tat', 'teacher_r50').
        seed (int): ``randomness.seed``.
        run_dir (str): The runner's work dir.
        opts (dict): Config overrides (see :func:`run_options`).
        evaluate_test (bool): Also score the final model once on the held-out test split.
            Defaults to False.
        teacher_record (dict, optional): When given, the trained model is saved as a demo teacher
            (``<run_dir>/teacher.pth``, weights only) with this record, completed with the val
            metrics, in its ``meta['demo_teacher']`` and in ``<run_dir>/teacher.json``.
    """
    import torch
    from mmengine.hooks import Hook
    cfg = build_cfg(task, method, opts, run_dir)
    runner_cls = _quiet_runner_class()
    runner = runner_cls.from_cfg(cfg)

    catcher = type('DemoMetricCatcher', (MetricCatcher, Hook), {})()
    runner.register_hook(catcher, priority='LOWEST')
    runner.train()
    if evaluate_test:
        runner.test()
    ckpt = osp.join(run_dir, f'iter_{runner.iter}.pth')
    metrics = _no_detections(task, catcher.metrics or {})
    info = dict(task=task, method=method, seed=seed, config=config_path(task, method),
                options=opts, checkpoint=ckpt, metrics=metrics, iters=runner.iter,
                log_dir=runner.log_dir)
    if evaluate_test:
        info['test_metrics'] = _no_detections(task, catcher.test_metrics or {})
    if teacher_record is not None:
        record = dict(teacher_record, iters=runner.iter, seed=seed, val_metrics=metrics,
                      config=config_path(task, method))
        info['checkpoint'] = save_teacher(runner.model, osp.join(run_dir, 'teacher.pth'), record)
    with open(osp.join(run_dir, 'demo_run.json'), 'w') as f:
        json.dump(info, f, indent=1, default=float)
    del runner
    gc.collect()
    # What is still alive now (the libraries, the teachers) is kept out of later collections:
    # MMEngine runs gc.collect() for every dataset it builds, each walking all of it (~0.3 s).
    gc.freeze()
    torch.set_grad_enabled(True)
    return info


def save_teacher(model, dst: str, record: dict) -> str:
    """Write a demo teacher: its weights and, in ``meta['demo_teacher']`` and ``teacher.json``
    beside it, how it was trained (iterations, quick or not, val metrics), so that the demo and
    the demo configs can refuse a quick or under-trained teacher."""
    import torch
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({'meta': {'demo_teacher': record}, 'state_dict': state}, dst)
    with open(osp.join(osp.dirname(dst), 'teacher.json'), 'w') as f:
        json.dump(record, f, indent=1, default=float)
    return dst


def log(msg: str) -> None:
    print(f'[demo {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def check_teacher_record(record: dict, ckpt: str, task: str, quick: bool, max_iters: int) -> None:
    """Refuse a demo teacher that was trained in quick mode or for fewer iterations than its
    config says (the most common way to get garbage distillation results without noticing)."""
    problem = None
    if record.get('quick') and not quick:
        problem = f'was trained in --quick mode ({record.get("iters")} iterations)'
    elif not quick and record.get('iters', 0) < max_iters:
        problem = f'was trained for {record.get("iters")} of its {max_iters} iterations'
    if problem:
        raise SystemExit(f'The demo teacher {ckpt} {problem}: distilling from it gives meaningless '
                         f'results. Train a real one with `python tools/demo.py --tasks {task} '
                         '--retrain-teacher` (or delete that file).')


def get_teacher(task: str, pair: str, args, progress) -> dict:
    """Train the task's teacher of ``pair`` or reuse a checked one; returns its run info."""
    key, metric_name, scale = METRICS[task]
    tdir = osp.join(args.work_dir, task, 'teacher')
    ckpt, record_file = osp.join(tdir, 'teacher.pth'), osp.join(tdir, 'teacher.json')
    name = teacher_name(pair)
    if osp.isfile(ckpt) and not args.retrain_teacher:
        if not osp.isfile(record_file):
            raise SystemExit(f'{ckpt} has no {record_file} saying how it was trained; rerun with '
                             '--retrain-teacher (or delete it).')
        with open(record_file) as f:
            record = json.load(f)
        from mmengine.config import Config
        max_iters = Config.fromfile(config_path(task, name)).train_cfg.max_iters
        check_teacher_record(record, ckpt, task, args.quick, max_iters)
        value = record['val_metrics'].get(key, float('nan')) * scale
        log(f'{task}/{name}: reusing {ckpt} ({record["iters"]} iterations, val {metric_name} '
            f'{value:.2f})')
        return dict(metrics=record['val_metrics'], checkpoint=ckpt, cached=True)
    log(f'{task}/{name}: training ({config_path(task, name)}){progress()}')
    t0 = time.time()
    opts = run_options(task, 'teacher', 0, args.work_dir, args.quick)
    info = train_one(task, name, 0, tdir, opts, teacher_record=dict(quick=args.quick))
    info['train_time_s'] = time.time() - t0
    info['cached'] = False
    log(f'{task}/{name}: finished in {info["train_time_s"]:.1f} s, val {metric_name} '
        f'{info["metrics"].get(key, float("nan")) * scale:.2f}')
    return info


def run_task(task: str, args, progress) -> dict:
    key, metric_name, scale = METRICS[task]
    task_dir = osp.join(args.work_dir, task)
    result = dict(task=task, metric=metric_name, pair=args.pair, runs={}, times={})
    task_start = time.time()
    info = get_teacher(task, args.pair, args, progress)
    progress.done('teacher', info.get('train_time_s'))
    teacher_ckpt = info['checkpoint']
    result['teacher_cached'] = info['cached']
    result['teacher'] = info['metrics'].get(key, float('nan')) * scale
    result['teacher_time_s'] = info.get('train_time_s')

    for method in args.methods:
        if (task, method) in SKIP:
            continue
        values, times = [], []
        for seed in args.seeds:
            run_dir = osp.join(task_dir, method, f'seed{seed}')
            log(f'{task}/{method} seed {seed}: started{progress()}')
            t0 = time.time()
            opts = run_options(task, method, seed, args.work_dir, args.quick, teacher_ckpt,
                               teacher_name(args.pair))
            info = train_one(task, method, seed, run_dir, opts)
            elapsed = time.time() - t0
            progress.done('student', elapsed)
            value = info['metrics'].get(key, float('nan')) * scale
            values.append(value)
            times.append(elapsed)
            log(f'{task}/{method} seed {seed}: finished in {elapsed:.1f} s, val {metric_name} '
                f'{value:.2f}')
        result['runs'][method] = values
        result['times'][method] = times
    result['total_time_s'] = time.time() - task_start

    if not args.no_figures:
        from tat_mm.demo.figures import make_task_figures
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


def run_pretrained_student(args) -> str:
    """``--pretrained-student``: protocol v3's runs for one seed, in this process.

    Uses the stage-2 learning rate the protocol chose on val (``docs/evidence/v3``), or the
    stage-1 rate where that choice is not committed. Returns the markdown table.
    """
    import evidence_v3 as v3
    seed = args.seeds[0]
    v3_args = argparse.Namespace(work_dir=args.work_dir, results=osp.join(args.work_dir, 'records'),
                                 threads=args.threads, quick=args.quick)
    for task in args.tasks:
        v3_args.lr_factor = v3.chosen_lr_factor(osp.join(REPO, 'docs', 'evidence', 'v3'), task) or 1.0
        methods = ['student'] + [m for m in args.methods if m in v3.METHODS[1:]
                                 and (task, m) not in v3.SKIP]
        runs = [(task, 'teacher', 'teacher', 0, ''), (task, 'stage1', 'student', seed, '')]
        runs += [(task, 'stage2', m, seed, '') for m in methods]
        for run in runs:
            if osp.isfile(v3.result_path(v3_args.results, run)):
                log(f'{task}/{run[1]}/{run[2]}: done before, reusing its record')
                continue
            log(f'{task}/{run[1]}/{run[2]} (seed {run[3]}): started')
            record = v3.run_one(run, v3_args)
            log(f'{task}/{run[1]}/{run[2]}: val {record["val"]:.2f}, test {record["test"]:.2f} '
                f'({record["train_time_s"]:.0f} s)')
    header = ('> **QUICK MODE: tiny schedules; these numbers are meaningless.**\n\n'
              if args.quick else '')
    return header + v3.summarize(v3_args.results, 'test', (seed,))


def main(argv=None):
    args = parse_args(argv)
    if args.pretrained_student:
        os.makedirs(args.work_dir, exist_ok=True)
        warnings.filterwarnings('ignore', message='.*pkg_resources.*')
        import tat_mm  # noqa: F401
        import torch
        torch.set_num_threads(args.threads)
        table = run_pretrained_student(args)
        with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
            f.write('# tat_mm demo: a pretrained student (protocol v3 regime)\n\n' + table + '\n')
        print('\n' + table, flush=True)
        return
    os.makedirs(args.work_dir, exist_ok=True)
    # mmcv / mmdet import pkg_resources, which warns once per import site (~100 lines).
    warnings.filterwarnings('ignore', message='.*pkg_resources.*')
    import tat_mm  # noqa: F401  (registries + stack fixes)
    import torch
    torch.set_num_threads(args.threads)
    start = time.time()
    log(f'work dir {args.work_dir}; tasks {args.tasks}; seeds {args.seeds}'
        f'{"; QUICK mode" if args.quick else ""}')
    results = {}
    num_students = sum(len(args.seeds) for task in args.tasks for m in args.methods
                       if (task, m) not in SKIP)
    progress = Progress(len(args.tasks), num_students)
    for task in args.tasks:
        results[task] = run_task(task, args, progress)
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
