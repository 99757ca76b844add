"""The evidence protocol: does distillation make the demo students better? (docs/evidence.md)

    python tools/evidence.py [--tasks seg cls det] [--seeds 0 1 2 3 4] [--jobs 2]
    python tools/evidence.py --summarize          # tables from the committed result files
    python tools/evidence.py --protocol v3 [--summarize]   # protocol v3 (tools/evidence_v3.py)

The protocol (fixed in ``docs/evidence.md`` before any result was looked at): for each task, one
student and two teachers -- ``r18`` (same family, 4x wider) and ``r50`` (deeper, bottleneck
blocks, larger receptive field) -- and the methods student alone, KD, FitNet, TaT and TaT + DAM,
each over 5 seeds. Every run trains on the train split with the fixed schedule of
``configs/demo/<task>/``, then scores its *final* model once on the val split and once on the
held-out test split (digits that no train or val image uses). Nothing is selected on test.

Resumable: every finished run writes one JSON file under ``--results`` (committed to the
repository), and a run whose file exists is skipped. Each run is a fresh process (``--jobs``
at a time, one CPU thread each), so a crash or a cut session loses at most the runs in flight.
Teachers are trained once (seed 0) per task and pair, into ``--work-dir``; their records (val
and test score, iterations) are result files too.
"""
import use_venv  # noqa: F401,I001  (first: re-runs this tool with ./.venv/bin/python if needed)
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import demo  # noqa: E402  (tools/demo.py: one run = one MMEngine Runner)
import evidence_v3  # noqa: E402  (protocol v3)
from evidence_stats import paired_interval  # noqa: E402,F401  (also used by the tests)

TASKS = ('seg', 'cls', 'det')
PAIRS = ('r18', 'r50')  # the teacher config of each pair: teacher.py, teacher_r50.py
METHODS = ('student', 'kd', 'fitnet', 'tat', 'tat_dam')
# The temperature follow-up (docs/evidence.md, "chosen on val after the main table"): TaT with a
# softer attention, the config of `tat` plus an override; not part of the default run.
VARIANTS = {f'tat_T{t}': ('tat', {'model.distill.0.losses.0.temperature': float(t)})
            for t in (4, 16)}
# The optimiser follow-up (docs/evidence.md, "Does AdamW let TaT steer the plateau?"): every
# method with SGD (momentum 0.9) instead of AdamW; the learning rate is chosen on val with
# the student alone (seed 0) from SGD_LRS, and each method is compared with the student of the
# same LR.
SGD_LRS = (0.01, 0.03, 0.1)


def sgd_options(lr: float) -> dict:
    """Config overrides: SGD with momentum instead of the demo's AdamW (weight decay and
    schedule unchanged)."""
    return {'optim_wrapper.optimizer.type': 'SGD', 'optim_wrapper.optimizer.lr': lr,
            'optim_wrapper.optimizer.momentum': 0.9}


for _lr in SGD_LRS:
    for _base in METHODS:
        VARIANTS[f'{_base}_sgd{_lr:g}'] = (_base, sgd_options(_lr))
# The all-SGD follow-up (docs/evidence.md, "Protocol v2"): each pair's teacher retrained with
# the SGD recipe its students use; `--pairs r50_sgd0.1` trains that teacher (into its own work
# dir) and distils from it. Not part of the default run.
PAIR_VARIANTS = {f'{_pair}_sgd0.1': (_pair, sgd_options(0.1)) for _pair in PAIRS}
# RetinaNet's classifier runs once per FPN level with sigmoid outputs; softmax KD does not apply.
SKIP = {('det', 'kd')}


def base_pair(pair: str) -> str:
    """The teacher architecture of a pair or pair variant: ``r50_sgd0.1`` -> ``r50``."""
    return PAIR_VARIANTS[pair][0] if pair in PAIR_VARIANTS else pair


def teacher_config(task: str, pair: str) -> str:
    pair = base_pair(pair)
    return demo.config_path(task, 'teacher' if pair == 'r18' else f'teacher_{pair}')


def base_method(method: str) -> str:
    """The demo config a method (or follow-up variant) trains: ``tat_sgd0.03`` -> ``tat``."""
    return VARIANTS[method][0] if method in VARIANTS else method


def baseline(method: str) -> str:
    """The student-alone run a method is paired with: the student variant trained with the same
    overrides (e.g. the same optimiser), else the protocol's student alone."""
    options = VARIANTS.get(method, (method, {}))[1]
    return next((m for m, (trained, opts) in VARIANTS.items()
                 if trained == 'student' and opts == options), 'student')


def method_name(method: str) -> str:
    """How the tables name a method or a follow-up variant."""
    if method in demo.METHOD_NAMES:
        return demo.METHOD_NAMES[method]
    trained, opts = VARIANTS[method]
    if 'optim_wrapper.optimizer.lr' in opts:
        suffix = f'SGD lr {opts["optim_wrapper.optimizer.lr"]:g} (not the protocol\'s AdamW)'
        return f'{demo.METHOD_NAMES[trained]}, {suffix}'
    return f'{demo.METHOD_NAMES[trained]} ({method})'


def result_path(results: str, task: str, pair: str, method: str, seed: int) -> str:
    if method == 'teacher':
        return osp.join(results, task, f'teacher_{pair}.json')
    if method == 'student':  # the student alone has no teacher: shared by both pairs
        return osp.join(results, task, 'student', f'seed{seed}.json')
    if base_method(method) == 'student':  # a student-alone variant: shared by both pairs too
        return osp.join(results, task, method, f'seed{seed}.json')
    return osp.join(results, task, pair, method, f'seed{seed}.json')


def run_dir(work_dir: str, task: str, pair: str, method: str, seed: int) -> str:
    """Work directory of one run (the student alone is shared by both pairs)."""
    if method == 'teacher':
        return osp.join(work_dir, task, f'teacher_{pair}')
    if base_method(method) == 'student':
        return osp.join(work_dir, task, 'student', method, f'seed{seed}')
    return osp.join(work_dir, task, pair, method, f'seed{seed}')


def run_list(args) -> list:
    """Every run of the protocol, teachers first, then seed-major within each task (so that a
    partial run has the same seeds for every method)."""
    runs = []
    for task in args.tasks:
        runs += [(task, pair, 'teacher', 0) for pair in args.pairs]
        for seed in args.seeds:
            for method in args.methods:
                if (task, base_method(method)) in SKIP:
                    continue
                pairs = ['-'] if base_method(method) == 'student' else args.pairs
                runs += [(task, pair, method, seed) for pair in pairs]
    return runs


# --------------------------------------------------------------------------- one run (child)
def run_options(task: str, pair: str, method: str, seed: int, work_dir: str) -> tuple:
    """The demo config one run trains and its overrides (variant, teacher of the pair).

    Args:
        task (str): ``seg``, ``cls`` or ``det``.
        pair (str): a teacher of PAIRS or PAIR_VARIANTS (``-`` for the student alone).
        method (str): ``teacher``, a method of METHODS or a follow-up of VARIANTS.
        seed (int): the run's seed.
        work_dir (str): the protocol's work dir (where the teachers' checkpoints are).

    Returns:
        tuple: (config name under ``configs/demo/<task>/``, dict of config overrides).
    """
    trained, variant_opts = VARIANTS.get(method, (method, {}))
    opts = demo.run_options(task, 'teacher' if method == 'teacher' else trained, seed,
                            work_dir, quick=False)
    opts.update(variant_opts)
    if method == 'teacher':
        opts.update(PAIR_VARIANTS.get(pair, (pair, {}))[1])
        return osp.splitext(osp.basename(teacher_config(task, pair)))[0], opts
    if trained != 'student':
        opts['model.teacher.config'] = teacher_config(task, pair)
        opts['model.teacher.checkpoint'] = osp.join(
            run_dir(work_dir, task, pair, 'teacher', 0), 'teacher.pth')
    return trained, opts


def run_one(task: str, pair: str, method: str, seed: int, args) -> dict:
    """Train one model, score its final weights on val and test, write the result file."""
    import torch
    torch.set_num_threads(args.threads)
    import tat_mm  # noqa: F401
    cfg_method, opts = run_options(task, pair, method, seed, args.work_dir)
    t0 = time.time()
    info = demo.train_one(task, cfg_method, seed, run_dir(args.work_dir, task, pair, method, seed),
                          opts, evaluate_test=True,
                          teacher_record=dict(quick=False) if method == 'teacher' else None)
    info['train_time_s'] = time.time() - t0
    key, _, scale = demo.METRICS[task]
    record = dict(task=task, pair=pair, method=method, seed=seed,
                  val=info['metrics'].get(key, float('nan')) * scale,
                  test=info['test_metrics'].get(key, float('nan')) * scale,
                  train_time_s=round(info['train_time_s'], 1), threads=args.threads,
                  config=osp.relpath(info['config'], REPO),
                  options={k: v for k, v in opts.items() if 'data_root' not in k
                           and 'ann_file' not in k and 'checkpoint' not in k})
    path = result_path(args.results, task, pair, method, seed)
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(record, f, indent=1, default=float)
    os.replace(path + '.tmp', path)
    return record


# --------------------------------------------------------------------------- scheduler (parent)
def schedule(args) -> None:
    todo = [r for r in run_list(args) if not osp.exists(result_path(args.results, *r))]
    # A teacher's record is committed, its checkpoint is not (work dirs are ignored). Retraining it
    # silently would change the teacher in the middle of the protocol: refuse those runs instead.
    for task, pair in sorted({(r[0], r[1]) for r in todo
                              if r[2] != 'teacher' and base_method(r[2]) != 'student'}):
        ckpt = osp.join(run_dir(args.work_dir, task, pair, 'teacher', 0), 'teacher.pth')
        if osp.exists(result_path(args.results, task, pair, 'teacher', 0)) and not osp.isfile(ckpt):
            print(f'[evidence] SKIPPED {task}/{pair}: the teacher record exists but its checkpoint '
                  f'{ckpt} does not. Copy the checkpoint there (e.g. --work-dir of the machine that '
                  'trained it), or delete the record and every committed result of this pair to '
                  'restart the pair with a new teacher.', flush=True)
            todo = [r for r in todo if not (r[0] == task and r[1] == pair)]
    done_before = len(run_list(args)) - len(todo)
    print(f'[evidence] {len(todo)} runs to do, {done_before} already done; '
          f'{args.jobs} at a time, {args.threads} thread(s) each', flush=True)
    running, durations, start = [], [], time.time()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY='PASSIVE',
               PYTHONWARNINGS='ignore')
    os.makedirs(args.work_dir, exist_ok=True)
    while todo or running:
        # Teachers first: a distillation run waits until its teacher's record exists.
        ready = [r for r in todo if r[2] == 'teacher' or
                 osp.exists(result_path(args.results, r[0], r[1], 'teacher', 0)) or
                 base_method(r[2]) == 'student']
        while ready and len(running) < args.jobs:
            run = ready.pop(0)
            todo.remove(run)
            log = osp.join(args.work_dir, 'logs', '_'.join(map(str, run)) + '.log')
            os.makedirs(osp.dirname(log), exist_ok=True)
            cmd = [sys.executable, osp.abspath(__file__), '--run-one', *map(str, run),
                   '--work-dir', args.work_dir, '--results', args.results,
                   '--threads', str(args.threads)]
            proc = subprocess.Popen(cmd, stdout=open(log, 'w'), stderr=subprocess.STDOUT, env=env)
            running.append((run, proc, time.time(), log))
        time.sleep(2)
        for item in list(running):
            run, proc, t0, log = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                print(f'[evidence] FAILED {run} (rc {proc.returncode}), log: {log}', flush=True)
                if run[2] == 'teacher':  # its students cannot run
                    todo = [r for r in todo if not (r[0] == run[0] and r[1] == run[1])]
                continue
            durations.append(time.time() - t0)
            with open(result_path(args.results, *run)) as f:
                rec = json.load(f)
            left = len(todo) + len(running)
            eta = np.mean(durations) * left / args.jobs / 60
            print(f'[evidence {time.strftime("%H:%M:%S")}] {"/".join(map(str, run))}: val '
                  f'{rec["val"]:.2f} test {rec["test"]:.2f} ({rec["train_time_s"]:.0f} s); '
                  f'{left} left, ETA {eta:.0f} min', flush=True)
    print(f'[evidence] done in {(time.time() - start) / 60:.1f} min', flush=True)


# --------------------------------------------------------------------------- statistics
def load_results(results: str) -> dict:
    found = {}
    for root, _, files in os.walk(results):
        for name in files:
            if name.endswith('.json'):
                with open(osp.join(root, name)) as f:
                    rec = json.load(f)
                found[(rec['task'], rec['pair'], rec['method'], rec['seed'])] = rec
    return found


def summarize(results: str, split: str = 'test') -> str:
    """Markdown tables: mean +- std over seeds and the paired difference to the student alone."""
    found = load_results(results)
    lines = []
    for task in TASKS:
        key, metric, _ = demo.METRICS[task]

        def seeds_of(method, pair=None):
            return {r[3]: found[r][split] for r in found
                    if r[0] == task and r[2] == method and (pair is None or r[1] == pair)}

        if not any(r[0] == task for r in found):
            continue
        lines.append(f'### {demo.TASK_NAMES[task]} ({task}): {metric} on the {split} split\n')
        lines.append('| teacher | method | n | mean ± std | Δ vs student alone [95% CI] | per seed |')
        lines.append('|---|---|---|---|---|---|')
        for pair in PAIRS + tuple(PAIR_VARIANTS):
            t = found.get((task, pair, 'teacher', 0))
            if t:
                lines.append(f'| {pair} | teacher | 1 | {t[split]:.2f} | | |')
        for method in ('student',) + tuple(m for m in VARIANTS if base_method(m) == 'student'):
            vals = [v for _, v in sorted(seeds_of(method).items())]
            if vals:
                std = np.std(vals, ddof=1) if len(vals) > 1 else float('nan')
                lines.append(f'| – | {method_name(method)} | {len(vals)} | {np.mean(vals):.2f} ± '
                             f'{std:.2f} | | {", ".join(f"{v:.2f}" for v in vals)} |')
        for pair in PAIRS + tuple(PAIR_VARIANTS):
            for method in METHODS[1:] + tuple(m for m in VARIANTS if base_method(m) != 'student'):
                runs = seeds_of(method, pair)
                if not runs:
                    continue
                seeds = sorted(runs)
                vals = [runs[s] for s in seeds]
                alone = seeds_of(baseline(method))  # the student alone with the same optimiser
                paired = [runs[s] - alone[s] for s in seeds if s in alone]
                mean, lo, hi = paired_interval(paired)
                std = np.std(vals, ddof=1) if len(vals) > 1 else float('nan')
                lines.append(f'| {pair} | {method_name(method).replace("student + ", "+ ")} | '
                             f'{len(vals)} | {np.mean(vals):.2f} ± {std:.2f} | {mean:+.2f} '
                             f'[{lo:+.2f}, {hi:+.2f}] | {", ".join(f"{v:.2f}" for v in vals)} |')
        lines.append('')
    return '\n'.join(lines)


# --------------------------------------------------------------------------- attention analysis
def attention_stats(args, num_images: int = 32) -> str:
    """How peaked the trained TaT attention is: for every finished TaT run, the mean over query
    pixels of the largest softmax weight and of the normalised entropy ``H / log(N)`` (1 =
    uniform, 0 = one-hot) on the first ``num_images`` val images. Seg: the anchor-point attention
    of ``HierarchicalTaTLoss`` (pooled maps)."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    import tat_mm  # noqa: F401
    from tat_mm.demo.figures import _features, _preprocess, build_model, val_samples
    lines = ['| task | teacher | seed | T | N keys | mean max weight (uniform) | mean H / log N |',
             '|---|---|---|---|---|---|---|']
    for task in args.tasks:
        for pair in args.pairs:
            for method, seed in [(m, k) for m in ('tat',) + tuple(VARIANTS) for k in args.seeds]:
                run_file = osp.join(run_dir(args.work_dir, task, pair, method, seed), 'demo_run.json')
                if not osp.isfile(run_file):
                    continue
                with open(run_file) as f:
                    run = json.load(f)
                model, cfg = build_model(run)
                samples, _ = val_samples(cfg, task, list(range(num_images)))
                with torch.no_grad():
                    feats = _features(model, _preprocess(model, samples))
                    pair_mod = model.pairs[0]
                    loss = pair_mod.losses[0]
                    s = feats['student'][pair_mod.student_tap].float()
                    t = feats['teacher'][pair_mod.teacher_tap].float()
                    q, k = loss.query_embed(s), loss.key_embed(t)
                    if hasattr(loss, 'pool_size'):  # anchor-point attention on pooled maps
                        q = F.avg_pool2d(q, loss.pool_size, loss.pool_size, ceil_mode=True)
                        k = F.avg_pool2d(k, loss.pool_size, loss.pool_size, ceil_mode=True)
                    q, k = q.flatten(2).transpose(1, 2), k.flatten(2).transpose(1, 2)
                    if getattr(loss, 'transposed', False):
                        q, k = k, q
                    temperature = getattr(loss, 'temperature', 1.0)
                    attn = torch.softmax(q @ k.transpose(1, 2) / temperature, dim=-1)
                    n = attn.shape[-1]
                    entropy = -(attn * attn.clamp_min(1e-30).log()).sum(-1) / np.log(n)
                lines.append(f'| {task} | {pair} | {seed} | {temperature:g} | {n} | '
                             f'{attn.max(-1).values.mean():.3f} ({1 / n:.3f}) | '
                             f'{entropy.mean():.3f} |')
    return '\n'.join(lines)


def plateau_stats(args, threshold: float = 1.25) -> str:
    """Seg: when each run's training cross-entropy first fell below ``threshold`` (the
    all-background solution sits at about 1.40 on these canvases), and its final value, from the
    runs' own logs (``vis_data/scalars.json``, every 25 iterations)."""
    from tat_mm.demo.figures import read_scalars
    lines = ['| teacher | method | ' + ' | '.join(f'seed {k}' for k in args.seeds) + ' |',
             '|---|---|' + '---|' * len(args.seeds)]
    for pair in args.pairs:
        for method in args.methods:
            if base_method(method) == 'student' and pair != args.pairs[0]:
                continue  # shared by both pairs: one row
            cells = []
            for seed in args.seeds:
                run_file = osp.join(run_dir(args.work_dir, 'seg', pair, method, seed), 'demo_run.json')
                if not osp.isfile(run_file):
                    cells.append('-')
                    continue
                with open(run_file) as f:
                    rows = [r for r in read_scalars(json.load(f)['log_dir'])
                            if 'decode.loss_ce' in r and 'iter' in r]
                below = [r['iter'] for r in rows if r['decode.loss_ce'] < threshold]
                cells.append(f"{below[0] if below else 'never'} ({rows[-1]['decode.loss_ce']:.2f})")
            lines.append(f'| {pair} | {method} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def gradient_stats(args, num_images: int = 16) -> str:
    """Seg: at each distillation run's final weights, the gradient of its distillation terms and
    of the student's own loss on the student's parameters: norm ratio and cosine, on the first
    ``num_images`` val images (train mode, as in training)."""
    import torch
    torch.set_num_threads(args.threads)
    import tat_mm  # noqa: F401
    from tat_mm.demo.figures import _preprocess, build_model, val_samples
    from tat_mm.engine.gradient_shares import (COMBINED, distill_loss_keys, gradient_shares,
                                               student_parameters)
    lines = ['| teacher | method | seed | task loss | distillation terms | '
             '\\|g distill\\| / \\|g task\\| | cos(g distill, g task) |',
             '|---|---|---|---|---|---|---|']
    for pair in args.pairs:
        for method in (m for m in args.methods if base_method(m) != 'student'):
            for seed in args.seeds:
                run_file = osp.join(run_dir(args.work_dir, 'seg', pair, method, seed), 'demo_run.json')
                if not osp.isfile(run_file):
                    continue
                with open(run_file) as f:
                    run = json.load(f)
                model, cfg = build_model(run)
                model.train()
                samples, _ = val_samples(cfg, 'seg', list(range(num_images)))
                data = _preprocess(model, samples)
                losses = model.loss(data['inputs'], data['data_samples'])
                # The same computation as DistillHealthHook's health/grad_ratio and grad_cos.
                distill_keys = distill_loss_keys(model, losses)
                share = gradient_shares(losses, distill_keys, student_parameters(model),
                                        combined=True)[COMBINED]
                task_loss = sum(v for k, v in losses.items() if 'loss' in k and k not in distill_keys)
                distill_loss = sum(losses[k] for k in distill_keys)
                lines.append(f'| {pair} | {method} | {seed} | {task_loss.item():.3f} | '
                             f'{distill_loss.item():.3f} | {share.ratio:.2f} | {share.cosine:+.3f} |')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tasks', nargs='+', choices=TASKS, default=list(TASKS))
    parser.add_argument('--pairs', nargs='+', choices=PAIRS + tuple(PAIR_VARIANTS),
                        default=list(PAIRS),
                        help='teachers (default: r18 r50; the *_sgd0.1 teachers: protocol v2)')
    parser.add_argument('--methods', nargs='*', choices=METHODS + tuple(VARIANTS),
                        default=list(METHODS),
                        help='student runs (default: all; none: only the teachers)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time (default 2)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads per run (default 1: on 2 cores, 2 runs x 1 '
                        'thread beat 1 run x 2 threads)')
    parser.add_argument('--protocol', choices=('v1', 'v3'), default='v1',
                        help='v1 (with its follow-ups and v2; default) or v3: the pretrained '
                        'student, teachers on the whole train pool, compute-matched control '
                        '(tools/evidence_v3.py)')
    parser.add_argument('--work-dir', default=None,
                        help='default: work_dirs/evidence (v1), work_dirs/evidence_v3 (v3)')
    parser.add_argument('--results', default=None,
                        help='one JSON file per finished run (committed); default: '
                        'docs/evidence/results (v1), docs/evidence/v3 (v3)')
    parser.add_argument('--summarize', action='store_true', help='print the tables and exit')
    parser.add_argument('--attention-stats', action='store_true',
                        help='how peaked the trained TaT attention of the finished runs is')
    parser.add_argument('--plateau-stats', action='store_true',
                        help='seg: when each run left the all-background plateau (from its log)')
    parser.add_argument('--gradient-stats', action='store_true',
                        help='seg: distillation vs task gradient on the student, final weights')
    parser.add_argument('--split', default='test', choices=('val', 'test'),
                        help='split of the --summarize tables (default: test)')
    parser.add_argument('--run-one', nargs=4, metavar=('TASK', 'PAIR', 'METHOD', 'SEED'),
                        help=argparse.SUPPRESS)
    parser.add_argument('--run-one-v3', nargs='+', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    v3 = args.protocol == 'v3'
    args.work_dir = osp.abspath(args.work_dir or osp.join(
        REPO, 'work_dirs', 'evidence_v3' if v3 else 'evidence'))
    args.results = osp.abspath(args.results or osp.join(
        REPO, 'docs', 'evidence', 'v3' if v3 else 'results'))
    if v3 and args.tasks == list(TASKS):
        args.tasks = list(evidence_v3.TASKS)
    return args


def main_v3(args) -> None:
    if args.summarize:
        print(evidence_v3.summarize(args.results, args.split, args.seeds))
    elif args.run_one_v3:
        task, kind, method, seed, *arg = args.run_one_v3
        evidence_v3.run_one((task, kind, method, int(seed), arg[0] if arg else ''), args)
    else:
        evidence_v3.schedule(args, osp.abspath(__file__))
        print(evidence_v3.summarize(args.results, 'test', args.seeds))


def main(argv=None):
    args = parse_args(argv)
    if args.protocol == 'v3':
        return main_v3(args)
    if args.summarize:
        print(summarize(args.results, args.split))
    elif args.attention_stats:
        print(attention_stats(args))
    elif args.plateau_stats:
        print(plateau_stats(args))
    elif args.gradient_stats:
        print(gradient_stats(args))
    elif args.run_one:
        task, pair, method, seed = args.run_one
        run_one(task, pair, method, int(seed), args)
    else:
        schedule(args)
        print(summarize(args.results))


if __name__ == '__main__':
    main()
