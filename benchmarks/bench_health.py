"""Cost of DistillHealthHook at its default interval on the demo's distillation configs.

For each config it trains the demo run (its real data, batch size, model and optimiser; a random
teacher, no validation, no checkpoints) with ``DistillHealthHook(interval=50,
teacher_check=False)`` and without any hook, alternating the two (A B A B ...) in this one
process, and times every iteration (from one ``after_train_iter`` to the next, so data loading
and every hook count). It prints

* the end-to-end overhead: median total time of the runs with the hook over those without;
* the per-check overhead: (median time of a checked iteration - median time of the other
  iterations of the same runs) / (report interval x median iteration without the hook), which
  load changes on a shared machine disturb less (``--interval 10`` gets five times as many
  checks from the same iterations; ``--report-interval`` stays 50, the hook's default);
* the teacher check's one-off time on the whole val split.

    .venv/bin/python benchmarks/bench_health.py [--configs cls/tat seg/tat det/tat_dam]
        [--iters 150] [--repeats 2] [--interval 50] [--report-interval 50]

``OMP_WAIT_POLICY=PASSIVE`` is set here (before torch loads OpenMP) unless already set, and
torch uses one thread (as the demo), so that two processes on a shared 2-core machine do not
spin against each other.
"""
import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402
import os.path as osp  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import tat_mm  # noqa: F401,E402
from tat_mm.engine.teacher_check import evaluate_teacher  # noqa: E402
from tat_mm.testing import save_random_checkpoint  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))
import demo  # noqa: E402  (tools/demo.py: the demo's configs and overrides)

SCOPES = dict(cls='mmpretrain', seg='mmseg', det='mmdet')


class IterationTimes(Hook):
    """Wall time of every training iteration, between successive ``after_train_iter`` calls."""

    priority = 'LOWEST'

    def __init__(self):
        self.times, self._last = [], None

    def before_train(self, runner) -> None:
        self._last = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


def build_runner(task: str, method: str, work_dir: str, teacher: str, hooks: list, iters: int,
                 validate: bool = False) -> Runner:
    opts = demo.run_options(task, method, 0, work_dir, False, teacher)
    opts.update({'custom_hooks': hooks, 'train_cfg.max_iters': iters,
                 'train_cfg.val_interval': iters, 'default_hooks.checkpoint': None,
                 'default_hooks.logger.interval': 1000, 'log_level': 'WARNING'})
    if not validate:
        opts.update({'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None})
    name = f'{task}_{method}_{"health" if hooks else "plain"}_{time.time():.6f}'
    return Runner.from_cfg(demo.build_cfg(task, method, opts, osp.join(work_dir, name)))


def train_times(task, method, work_dir, teacher, hooks, iters) -> list:
    runner = build_runner(task, method, work_dir, teacher, hooks, iters)
    timer = IterationTimes()
    runner.register_hook(timer)
    runner.train()
    return timer.times


def bench(config: str, args, work_dir: str) -> dict:
    task, method = config.split('/')
    teacher = osp.join(work_dir, f'{task}_teacher.pth')
    if not osp.isfile(teacher):
        save_random_checkpoint(SCOPES[task], Config.fromfile(demo.config_path(task, 'teacher'))
                               .model.to_dict(), teacher)
    hook = dict(type='DistillHealthHook', interval=args.interval, teacher_check=False)
    runs = {'health': [], 'plain': []}
    for _ in range(args.repeats):
        for kind in ('health', 'plain'):
            runs[kind].append(train_times(task, method, work_dir, teacher,
                                          [hook] if kind == 'health' else [], args.iters))
    skip = args.warmup
    totals = {k: statistics.median(sum(t[skip:]) for t in v) for k, v in runs.items()}
    checked = {i for i in range(args.iters) if (i + 1) % args.interval == 0 and i >= skip}
    probe = statistics.median(t[i] for t in runs['health'] for i in checked)
    others = statistics.median(t[i] for t in runs['health'] for i in range(skip, args.iters)
                               if i not in checked)
    plain = statistics.median(t[i] for t in runs['plain'] for i in range(skip, args.iters))
    # the one-off teacher check, on the whole val split
    runner = build_runner(task, method, work_dir, teacher, [], 1, validate=True)
    start = time.perf_counter()
    _, num_samples, _ = evaluate_teacher(runner.model, runner.val_loop.dataloader,
                                         runner.val_loop.evaluator)
    return dict(config=config, end_to_end=totals['health'] / totals['plain'] - 1,
                per_check=(probe - others) / (args.report_interval * plain), probe=probe,
                others=others,
                plain=plain, teacher_check=time.perf_counter() - start, val=num_samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--configs', nargs='+', default=['cls/tat', 'seg/tat', 'det/tat_dam'],
                        help='demo configs, <task>/<method> (configs/demo/<task>/<method>.py)')
    parser.add_argument('--iters', type=int, default=150)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--interval', type=int, default=50)
    parser.add_argument('--report-interval', type=int, default=50,
                        help='the per-check overhead is given for checks this far apart (default '
                        "50, the hook's default; measure with a smaller --interval to get more "
                        'checks from shorter runs)')
    parser.add_argument('--warmup', type=int, default=5, help='first iterations not counted')
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        for config in args.configs:
            rows.append(bench(config, args, work_dir))
            print(rows[-1], flush=True)
    print(f'\nDistillHealthHook(interval={args.interval}), {args.iters} iterations x '
          f'{args.repeats} runs each, alternating, {args.threads} thread(s)')
    print('| demo config | iteration without hook | checked iteration | overhead end to end | '
          f'overhead of the checks at interval {args.report_interval} | teacher check (val) |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['config']} | {r['plain'] * 1e3:.0f} ms | {r['probe'] * 1e3:.0f} ms | "
              f"{r['end_to_end']:+.1%} | {r['per_check']:+.1%} | {r['teacher_check']:.1f} s "
              f"({r['val']} images) |")


if __name__ == '__main__':
    main()
