"""Protocol v3 of the evidence (docs/evidence.md, "Protocol v3"): a pretrained student, a much
stronger teacher, a compute-matched control.

    python tools/evidence.py --protocol v3 [--tasks cls det seg] [--seeds 0 1 2 3 4] [--jobs 2]
    python tools/evidence.py --protocol v3 --summarize

Per task, with the ``r50`` teacher config:

1. ``teacher``: the teacher trained on the whole train pool (cls: 1,079 images; seg / det: 1,600
   canvases), 1,200 iterations, validated every 200 (its val curve is in its result file);
2. ``stage1``: each seed's student alone, the v1 recipe (seg: SGD lr 0.1, v2's);
3. ``lr``: the stage-2 learning rate, chosen on val with the control (seed 0) only;
4. ``stage2``: from the seed's stage-1 checkpoint (``load_from``, the product's route), half the
   stage-1 length: the control (student alone continued), KD, FitNet, TaT, TaT + DAM;
5. ``time``: for a method whose paired test interval against the control lies above 0, the
   control continued for as many iterations as fit in the method's measured training time.

Every run is a fresh process writing one JSON file (resumable, like v1), with its provenance: code
commit, checkpoint sha256s, package versions, date. A stage-2 run refuses a teacher or stage-1
checkpoint whose sha256 is not the one its record names.
"""
import use_venv  # noqa: F401,I001  (first: the venv's Python if needed)
import datetime
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys
import time

import numpy as np

import demo  # noqa: E402  (tools/demo.py: one run = one MMEngine Runner)
from evidence_stats import paired_interval

TASKS = ('cls', 'det', 'seg')  # stage-2 order: cheapest first
METHODS = ('student', 'kd', 'fitnet', 'tat', 'tat_dam')  # 'student' = the control
SKIP = {('det', 'kd')}  # RetinaNet's sigmoid classifier: softmax KD does not apply (as v1)
PAIR = 'r50'
TEACHER_ITERS, TEACHER_VAL_INTERVAL, TEACHER_CANVASES = 1200, 200, 1600
STAGE1_ITERS = {'cls': 300, 'det': 300, 'seg': 600}  # the v1 students' own schedules
STAGE2_ITERS = {task: n // 2 for task, n in STAGE1_ITERS.items()}
STAGE1_LR = {'cls': 2e-3, 'det': 1e-3, 'seg': 0.1}  # cls / det AdamW (v1), seg SGD (v2)
LR_FACTORS = (0.1, 0.3, 1.0)
SGD = {'optim_wrapper.optimizer.type': 'SGD', 'optim_wrapper.optimizer.momentum': 0.9}
KINDS = ('teacher', 'stage1', 'lr', 'stage2', 'time')
REGIMES = {'teacher': 'teacher (whole train pool)', 'stage1': 'stage 1: student alone from scratch',
           'lr': 'stage-2 learning-rate choice (control, seed 0)',
           'stage2': 'stage 2: from the stage-1 checkpoint',
           'time': 'time-matched control: student alone from the stage-1 checkpoint'}


# --------------------------------------------------------------------------- runs and paths
def result_path(results: str, run: tuple) -> str:
    """Result file of a run ``(task, kind, method, seed, arg)``."""
    task, kind, method, seed, arg = run
    if kind == 'teacher':
        return osp.join(results, task, f'teacher_{PAIR}.json')
    if kind == 'stage1':
        return osp.join(results, task, 'stage1', f'seed{seed}.json')
    if kind == 'lr':
        return osp.join(results, task, 'lr', f'control_lr{arg}.json')
    if kind == 'time':
        return osp.join(results, task, 'time_matched', method, f'seed{seed}.json')
    if method == 'student':  # the control does not use the teacher
        return osp.join(results, task, 'control', f'seed{seed}.json')
    return osp.join(results, task, PAIR, method, f'seed{seed}.json')


def run_dir(work_dir: str, run: tuple) -> str:
    task, kind, method, seed, arg = run
    name = {'teacher': f'teacher_{PAIR}', 'lr': f'lr{arg}'}.get(kind, f'{method}_seed{seed}')
    return osp.join(work_dir, task, kind, name)


def load(path: str):
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def chosen_lr_factor(results: str, task: str):
    """The stage-2 lr factor chosen on val (best control val score, seed 0; a tie goes to the
    smaller factor), or None while a learning-rate run is missing."""
    records = [load(result_path(results, (task, 'lr', 'student', 0, f))) for f in LR_FACTORS]
    if any(r is None for r in records):
        return None
    best = max(r['val'] for r in records)
    return next(f for f, r in zip(LR_FACTORS, records) if r['val'] == best)


def time_matched_iters(results: str, task: str, method: str, seeds) -> int:
    """N = round(mean stage-2 time of the method / the control's mean time per iteration)."""
    runs = [load(result_path(results, (task, 'stage2', m, s, ''))) for m in (method, 'student')
            for s in seeds]
    t_method = np.mean([r['train_time_s'] for r in runs[:len(seeds)]])
    t_control = np.mean([r['train_time_s'] / r['schedule']['iters'] for r in runs[len(seeds):]])
    return int(round(t_method / t_control))


def plan(args) -> list:
    """Every run of the protocol in priority order (time-matched runs once their method's cells
    show a gain), as ``(task, kind, method, seed, arg)`` tuples."""
    # The seg teacher (the longest run) first, beside the first task's chain; then task by task
    # (cls, det, seg): its teacher, stage 1, the lr runs, stage 2 seed-major.
    runs = [('seg', 'teacher', 'teacher', 0, '')] if 'seg' in args.tasks else []
    for task in args.tasks:
        methods = [m for m in METHODS if (task, m) not in SKIP]
        runs += [(task, 'teacher', 'teacher', 0, '')] if task != 'seg' else []
        runs += [(task, 'stage1', 'student', s, '') for s in args.seeds]
        runs += [(task, 'lr', 'student', 0, f) for f in LR_FACTORS]
        runs += [(task, 'stage2', m, s, '') for s in args.seeds for m in methods]
        # The time-matched controls of the task's methods that beat the control (H4).
        for method in methods[1:]:
            row = paired(args.results, task, method, 'test', args.seeds)
            if row and row['n'] == len(args.seeds) and row['lo'] > 0:
                n = time_matched_iters(args.results, task, method, args.seeds)
                runs += [(task, 'time', method, s, str(n)) for s in args.seeds]
    return runs


def ready(run: tuple, results: str) -> bool:
    """Whether the runs a run depends on have their result files."""
    task, kind, method, seed, _ = run
    if kind in ('teacher', 'stage1'):
        return True
    stage1 = osp.isfile(result_path(results, (task, 'stage1', 'student', seed if kind != 'lr' else 0, '')))
    if kind == 'lr':
        return stage1
    needs_teacher = kind == 'stage2' and method != 'student'
    return (stage1 and chosen_lr_factor(results, task) is not None
            and (not needs_teacher or osp.isfile(result_path(results, (task, 'teacher', 'teacher', 0, '')))))


# --------------------------------------------------------------------------- one run (child)
def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def provenance() -> dict:
    """The code's commit (and whether tracked files differ from it), package versions, date."""
    import importlib.metadata as md

    def git(*cmd):
        return subprocess.run(['git', '-C', demo.REPO, *cmd], capture_output=True,
                              text=True).stdout.strip()

    versions = {}
    for name in ('torch', 'torchvision', 'mmcv', 'mmengine', 'mmpretrain', 'mmsegmentation',
                 'mmdet', 'numpy'):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return dict(git_commit=git('rev-parse', 'HEAD'),
                git_dirty=bool(git('status', '--porcelain', '--untracked-files=no')),
                versions=versions, python=sys.version.split()[0],
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))


def schedule_options(iters: int, val_interval: int = None) -> dict:
    """Config overrides for a run of ``iters`` iterations: warm-up as configured (20 iterations),
    the cosine over the whole run, one checkpoint at the end."""
    return {'train_cfg.max_iters': iters, 'train_cfg.val_interval': val_interval or iters,
            'default_hooks.checkpoint.interval': iters,
            'param_scheduler.1.T_max': iters, 'param_scheduler.1.end': iters}


def teacher_data_options(task: str, work_dir: str) -> dict:
    """The teacher's training set: every train-pool image (cls) or 1,600 canvases (seg, det; in
    their own cache folder, all three splits with the same arguments)."""
    if task == 'cls':
        return {'train_dataloader.dataset.indices': None}
    root = osp.join(work_dir, 'data', f'digits_train{TEACHER_CANVASES}') + '/'
    opts = {}
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts[f'{loader}.dataset.data_root'] = root
        opts[f'{loader}.dataset.num_train'] = TEACHER_CANVASES
    if task == 'det':
        opts['val_evaluator.ann_file'] = root + 'annotations/instances_val.json'
        opts['test_evaluator.ann_file'] = root + 'annotations/instances_test.json'
    return opts


def check_teacher_canvases(work_dir: str) -> None:
    """The teachers' 1,600-canvas cache must have the students' val and test canvases and, as its
    first 400 train canvases, the students' 400 (the protocol's data table)."""
    from mmengine.config import Config
    from tat_mm.datasets import ensure_canvas_files
    digits = dict(Config.fromfile(demo.config_path('seg', 'teacher')).digits)
    small, large = osp.join(work_dir, 'data', 'digits'), osp.join(
        work_dir, 'data', f'digits_train{TEACHER_CANVASES}')
    ensure_canvas_files(small, **digits)
    ensure_canvas_files(large, **dict(digits, num_train=TEACHER_CANVASES))
    for split, count in (('train', digits['num_train']), ('val', digits['num_val']),
                         ('test', digits['num_test'])):
        for folder in ('images', 'masks'):
            for i in range(count):
                name = osp.join(folder, split, f'{i:05d}.png')
                with open(osp.join(small, name), 'rb') as a, open(osp.join(large, name), 'rb') as b:
                    if a.read() != b.read():
                        raise SystemExit(f'Protocol v3: {name} differs between {small} and {large}; '
                                         'the teachers would not share the students\' canvases.')


def protocol_hooks(task: str, cfg_name: str) -> list:
    """The config's custom hooks without ``DistillHealthHook``, which the demo configs got after
    this protocol was fixed: its teacher pass and gradient shares would add to the training time
    that the time-matched control (H4) is measured by. The protocol's runs train as v1's."""
    from mmengine.config import Config
    hooks = Config.fromfile(demo.config_path(task, cfg_name)).get('custom_hooks', [])
    return [dict(h) for h in hooks if h.get('type') != 'DistillHealthHook']


def run_options(run: tuple, args) -> tuple:
    """The demo config a run trains, its overrides and its record fields."""
    cfg_name, opts, info = _run_options(run, args)
    opts['custom_hooks'] = protocol_hooks(run[0], cfg_name)
    if getattr(args, 'quick', False):  # tools/demo.py --quick: tiny schedules, meaningless numbers
        # ('student': the quick keys without a teacher, whose checkpoint is already set)
        opts.update(demo.run_options(run[0], 'student', run[3], args.work_dir, quick=True))
        if run[1] == 'teacher':  # its own training set (the quick keys reset the data root)
            opts.update(teacher_data_options(run[0], args.work_dir))
        opts.update(schedule_options(demo.QUICK_ITERS))
        info['iters'] = demo.QUICK_ITERS
    return cfg_name, opts, info


def _run_options(run: tuple, args) -> tuple:
    task, kind, method, seed, arg = run
    work, results = args.work_dir, args.results
    opts = demo.run_options(task, 'teacher' if kind == 'teacher' else 'student', seed, work,
                            quick=False)
    sgd = task == 'seg'
    info = dict(teacher_train_size=None, init=None, teacher=None)
    if kind == 'teacher':
        opts.update(schedule_options(TEACHER_ITERS, TEACHER_VAL_INTERVAL))
        opts.update(teacher_data_options(task, work))
        if sgd:
            opts.update(SGD, **{'optim_wrapper.optimizer.lr': STAGE1_LR[task]})
        info.update(iters=TEACHER_ITERS, lr=None if not sgd else STAGE1_LR[task])
        return f'teacher_{PAIR}', opts, info
    if sgd:
        opts.update(SGD)
    if kind == 'stage1':
        opts['optim_wrapper.optimizer.lr'] = STAGE1_LR[task]
        info.update(iters=STAGE1_ITERS[task], lr=STAGE1_LR[task])
        return 'student', opts, info
    # Stage 2, the lr choice and the time-matched control start from the seed's stage-1 checkpoint.
    stage1 = load(result_path(results, (task, 'stage1', 'student', seed if kind != 'lr' else 0, '')))
    init = osp.join(work, stage1['checkpoint'])
    info['init'] = dict(path=stage1['checkpoint'], sha256=stage1['checkpoint_sha256'],
                        from_record=osp.relpath(result_path(results, (task, 'stage1', 'student',
                                                                      stage1['seed'], '')), results))
    opts['load_from'] = init
    # tools/demo.py --pretrained-student passes the protocol's choice instead of its own lr runs.
    factor = float(arg) if kind == 'lr' else (getattr(args, 'lr_factor', None)
                                              or chosen_lr_factor(results, task))
    lr = STAGE1_LR[task] * factor
    iters = int(arg) if kind == 'time' else STAGE2_ITERS[task]
    opts.update(schedule_options(iters))
    opts['optim_wrapper.optimizer.lr'] = lr
    info.update(iters=iters, lr=lr, lr_factor=factor)
    if kind == 'stage2' and method != 'student':
        teacher = load(result_path(results, (task, 'teacher', 'teacher', 0, '')))
        ckpt = osp.join(run_dir(work, (task, 'teacher', 'teacher', 0, '')), 'teacher.pth')
        opts['model.teacher.config'] = demo.config_path(task, f'teacher_{PAIR}')
        opts['model.teacher.checkpoint'] = ckpt
        info['teacher'] = dict(path=osp.relpath(ckpt, work), sha256=teacher['checkpoint_sha256'])
        info['teacher_train_size'] = teacher['train_size']
        return method, opts, info
    return 'student', opts, info


def verify_checkpoints(info: dict, work_dir: str) -> None:
    """Refuse to start from, or distil from, a file other than the one the protocol's records
    name (e.g. a teacher retrained in between). Checkpoint paths are relative to the work dir."""
    for role in ('init', 'teacher'):
        ref = info.get(role)
        if ref is None:
            continue
        path = osp.join(work_dir, ref['path'])
        if not osp.isfile(path):
            raise SystemExit(f'Protocol v3: the {role} checkpoint {path} is missing; it is not '
                             'committed (work dirs are ignored): copy it from the machine that '
                             'trained it, or delete its record and every run that used it.')
        found = sha256(path)
        if found != ref['sha256']:
            raise SystemExit(f'Protocol v3: {path} has sha256 {found}, but the record names '
                             f'{ref["sha256"]}: refusing to pair this run with another {role}.')


def val_curve(log_dir: str, key: str, scale: float) -> list:
    """``[[iteration, val metric], ...]`` from a run's ``vis_data/scalars.json``."""
    curve = []
    path = osp.join(log_dir, 'vis_data', 'scalars.json')
    if osp.isfile(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if key in row:
                    curve.append([row.get('step', row.get('iter')), row[key] * scale])
    return curve


def run_one(run: tuple, args) -> dict:
    """Train one run, score its final weights on val and test, write its result file."""
    import torch
    torch.set_num_threads(args.threads)
    import tat_mm  # noqa: F401
    task, kind, method, seed, arg = run
    cfg_name, opts, info = run_options(run, args)
    verify_checkpoints(info, args.work_dir)
    if kind == 'stage2' and method != 'student':
        # Stage 2 must load the stage-1 student through the product's route; code older than
        # that route would load nothing into the distiller's student, silently.
        import tat_mm.distill.student_checkpoint  # noqa: F401
    if kind == 'teacher' and task != 'cls':
        check_teacher_canvases(args.work_dir)
    rdir = run_dir(args.work_dir, run)
    t0 = time.time()
    out = demo.train_one(task, cfg_name, seed, rdir, opts, evaluate_test=True,
                         teacher_record=(dict(quick=getattr(args, 'quick', False))
                                         if kind == 'teacher' else None))
    train_time = time.time() - t0
    key, _, scale = demo.METRICS[task]
    ckpt = out['checkpoint']
    optimizer = 'SGD' if task == 'seg' else 'AdamW'
    record = dict(
        protocol='v3', task=task, kind=kind, method=method, seed=seed, pair=PAIR,
        regime=REGIMES[kind],
        val=out['metrics'].get(key, float('nan')) * scale,
        test=out['test_metrics'].get(key, float('nan')) * scale,
        train_time_s=round(train_time, 1), threads=args.threads,
        config=osp.relpath(out['config'], demo.REPO),
        schedule=dict(iters=info['iters'], optimizer=optimizer,
                      lr=info['lr'] if info['lr'] is not None else STAGE1_LR[task],
                      lr_factor=info.get('lr_factor'), warmup_iters=20, cosine_eta_min=1e-5),
        init=info['init'], teacher=info['teacher'],
        teacher_train_size=info['teacher_train_size'],
        # checkpoint paths are relative to the work dir (work dirs are not committed)
        checkpoint=osp.relpath(ckpt, args.work_dir), checkpoint_sha256=sha256(ckpt),
        options={k: v for k, v in opts.items() if 'data_root' not in k and 'ann_file' not in k
                 and 'checkpoint' not in k and k != 'load_from'},
        provenance=provenance())
    if kind == 'teacher':
        record['train_size'] = ({'cls': '1079 images (the whole train pool)'}.get(task)
                                or f'{TEACHER_CANVASES} canvases')
        record['val_curve'] = val_curve(out['log_dir'], key, scale)
    path = result_path(args.results, run)
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(record, f, indent=1, default=float)
    os.replace(path + '.tmp', path)
    return record


# --------------------------------------------------------------------------- scheduler (parent)
def schedule(args, script: str) -> None:
    """Run the plan, ``args.jobs`` processes at a time, each run when its dependencies are done;
    re-plans after every finished run (time-matched controls appear once they are due)."""
    failed, running = set(), []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY='PASSIVE',
               PYTHONWARNINGS='ignore')
    os.makedirs(osp.join(args.work_dir, 'logs'), exist_ok=True)
    start = time.time()
    while True:
        busy = {r for r, *_ in running}
        todo = [r for r in plan(args) if r not in failed and r not in busy
                and not osp.isfile(result_path(args.results, r))]
        if not todo and not running:
            break
        for run in [r for r in todo if ready(r, args.results)][:max(0, args.jobs - len(running))]:
            log = osp.join(args.work_dir, 'logs', '_'.join(map(str, run)).rstrip('_') + '.log')
            cmd = [sys.executable, script, '--protocol', 'v3', '--run-one-v3', *map(str, run),
                   '--work-dir', args.work_dir, '--results', args.results,
                   '--threads', str(args.threads)]
            proc = subprocess.Popen(cmd, stdout=open(log, 'w'), stderr=subprocess.STDOUT, env=env)
            running.append((run, proc, log))
            print(f'[evidence v3 {time.strftime("%H:%M:%S")}] started {"/".join(map(str, run))}',
                  flush=True)
        if not running:  # nothing ready and nothing running: the rest waits on failed runs
            print(f'[evidence v3] {len(todo)} runs wait on failed runs: {sorted(failed)}', flush=True)
            break
        time.sleep(5)
        for item in list(running):
            run, proc, log = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                failed.add(run)
                print(f'[evidence v3] FAILED {run} (rc {proc.returncode}), log: {log}', flush=True)
                continue
            rec = load(result_path(args.results, run))
            print(f'[evidence v3 {time.strftime("%H:%M:%S")}] {"/".join(map(str, run))}: val '
                  f'{rec["val"]:.2f} test {rec["test"]:.2f} ({rec["train_time_s"]:.0f} s)',
                  flush=True)
    print(f'[evidence v3] stopped after {(time.time() - start) / 60:.1f} min', flush=True)


# --------------------------------------------------------------------------- statistics
def seed_values(results: str, task: str, kind: str, method: str, split: str, seeds,
                arg: str = '') -> dict:
    found = {}
    for seed in seeds:
        rec = load(result_path(results, (task, kind, method, seed, arg)))
        if rec is not None:
            found[seed] = rec[split]
    return found


def paired(results: str, task: str, method: str, split: str, seeds, kind: str = 'stage2',
           arg: str = '', against: tuple = ('stage2', 'student')):
    """A method's paired difference to the control (or ``against``), or None without runs."""
    runs = seed_values(results, task, kind, method, split, seeds, arg)
    base = seed_values(results, task, against[0], against[1], split, seeds)
    common = sorted(set(runs) & set(base))
    if not common:
        return None
    mean, lo, hi = paired_interval([runs[s] - base[s] for s in common])
    return dict(n=len(common), mean=mean, lo=lo, hi=hi)


def _cell(row) -> str:
    if row is None:
        return ''
    if np.isnan(row['lo']):
        return f'{row["mean"]:+.2f} (n = {row["n"]})'
    return f'{row["mean"]:+.2f} [{row["lo"]:+.2f}, {row["hi"]:+.2f}]'


def summarize(results: str, split: str = 'test', seeds=(0, 1, 2, 3, 4)) -> str:
    """The v3 tables: teachers (and the H1 gap), the lr choice, and per task the stage-1
    students, the control and each method against the control and against stage 1."""
    lines = []
    for task in TASKS:
        key, metric, _ = demo.METRICS[task]
        if not osp.isdir(osp.join(results, task)):
            continue
        teacher = load(result_path(results, (task, 'teacher', 'teacher', 0, '')))
        lines.append(f'### v3 {demo.TASK_NAMES[task]} ({task}): {metric} on the {split} split\n')
        if teacher is not None:
            s1_val = seed_values(results, task, 'stage1', 'student', 'val', seeds)
            curve = ', '.join(f'{int(i)}: {v:.2f}' for i, v in teacher.get('val_curve', []))
            if s1_val:
                gap = teacher['val'] - np.mean(list(s1_val.values()))
                gap_text = (f'val - stage-1 student val mean = {gap:+.2f} (H1 target >= 5: '
                            f'{"met" if gap >= 5 else "MISSED"})')
            else:
                gap_text = 'H1 gap: no stage-1 run yet'
            lines.append(f'Teacher `{PAIR}` on {teacher["train_size"]}: val {teacher["val"]:.2f}, '
                         f'test {teacher["test"]:.2f}; {gap_text}. Val curve (iteration: val): '
                         f'{curve}.\n')
        lrs = [load(result_path(results, (task, 'lr', 'student', 0, f))) for f in LR_FACTORS]
        if any(lrs):
            choice = chosen_lr_factor(results, task)
            cells = ', '.join(f'{f:g}x ({r["schedule"]["lr"]:g}): val {r["val"]:.2f}'
                              for f, r in zip(LR_FACTORS, lrs) if r)
            lines.append(f'Stage-2 learning rate on val (control, seed 0): {cells}'
                         f'{f" -> {choice:g}x" if choice else " (incomplete)"}.\n')
        lines.append('| run | n | mean ± std | Δ vs control [95% CI] | Δ vs stage 1 [95% CI] '
                     '| per seed |')
        lines.append('|---|---|---|---|---|---|')
        rows = [('stage 1 (student alone, from scratch)', 'stage1', 'student', '')]
        rows += [(('control: student alone continued' if m == 'student' else
                   demo.METHOD_NAMES[m].replace('student + ', '+ ')), 'stage2', m, '')
                 for m in METHODS if (task, m) not in SKIP]
        time_dir = osp.join(results, task, 'time_matched')
        for method in sorted(os.listdir(time_dir)) if osp.isdir(time_dir) else []:
            iters = {load(osp.join(time_dir, method, f))['schedule']['iters']
                     for f in os.listdir(osp.join(time_dir, method))}
            rows.append((f'time-matched control for {method} ({", ".join(map(str, iters))} it.)',
                         'time', method, str(min(iters))))
        for name, kind, method, arg in rows:
            vals = seed_values(results, task, kind, method, split, seeds, arg)
            if not vals:
                continue
            v = [vals[s] for s in sorted(vals)]
            std = np.std(v, ddof=1) if len(v) > 1 else float('nan')
            vs_control = (None if kind == 'stage1' or (kind, method) == ('stage2', 'student')
                          else paired(results, task, method, split, seeds, kind, arg))
            vs_stage1 = (None if kind == 'stage1' else
                         paired(results, task, method, split, seeds, kind, arg, ('stage1', 'student')))
            lines.append(f'| {name} | {len(v)} | {np.mean(v):.2f} ± {std:.2f} | {_cell(vs_control)} '
                         f'| {_cell(vs_stage1)} | {", ".join(f"{x:.2f}" for x in v)} |')
        h4 = [(m, paired(results, task, m, split, seeds, against=('time', m)))
              for _, kind, m, _ in rows if kind == 'time']
        if h4:
            lines.append('\nH4, each method against its time-matched control (paired): ' + '; '.join(
                f'{demo.METHOD_NAMES[m].replace("student + ", "")} {_cell(row)}' for m, row in h4) + '.')
        lines.append('')
    return '\n'.join(lines)
