"""Checkpoints survive interrupted saves and full disks; auto resume finds a complete checkpoint.

Real MMEngine runners with MMEngine's own CheckpointHook (the demo classification student,
configs/demo/cls/student.py, a few iterations on the built-in digits), with ``max_keep_ckpts=1``:
the setting that lost every checkpoint when a save was interrupted (tat_mm.compat fix 3).
"""
import copy
import errno
import functools
import io
import os
import os.path as osp
import shutil
from glob import glob

import mmengine.runner.runner
import pytest
import torch
from mmengine.config import Config
from mmengine.fileio import LocalBackend
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.registry import METRICS
from mmengine.runner import Runner

import tat_mm  # noqa: F401
from tat_mm.checkpoint_loading import load_checkpoint_file
from tat_mm.engine import resumable_checkpoint
from tat_mm.engine.atomic_file import atomic_write
from tat_mm.engine.resumable_checkpoint import find_resumable_checkpoint, is_complete_checkpoint

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_STUDENT = osp.join(ROOT, 'configs', 'demo', 'cls', 'student.py')


class RecordIters(Hook):
    """The iterations a run trained (1-based)."""

    def __init__(self):
        self.iters = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.iters.append(runner.iter + 1)


_RUNS = []


@functools.lru_cache(maxsize=None)
def _demo_config():
    return Config.fromfile(DEMO_STUDENT)


def train(work_dir, max_iters, resume=False, max_keep_ckpts=1, recorder=None, save_best=False):
    """Train the demo student with MMEngine's CheckpointHook every 2 iterations; returns the
    iterations trained (also kept in ``recorder`` when the run fails). ``save_best``: validate
    every 2 iterations with :class:`RisingScore` and keep the best checkpoint."""
    cfg = copy.deepcopy(_demo_config())
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'atomic_{len(_RUNS)}'  # runners are named instances: one name each
    _RUNS.append(cfg.experiment_name)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                         val_interval=2 if save_best else 10**6)
    if save_best:
        cfg.val_dataloader.dataset.indices = 8
        cfg.val_evaluator = dict(type='RisingScore')
        cfg.default_hooks.checkpoint.update(save_best='score', rule='greater')
    else:
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.train_dataloader.batch_size = 8
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.checkpoint.max_keep_ckpts = max_keep_ckpts
    cfg.resume = resume
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    recorder = recorder if recorder is not None else RecordIters()
    runner.register_hook(recorder)
    runner.train()
    return recorder.iters


@METRICS.register_module(force=True)
class RisingScore(BaseMetric):
    """A score that improves at every validation: each one saves a new best checkpoint."""

    calls = 0

    def process(self, data_batch, data_samples):
        self.results.append(len(data_samples))

    def compute_metrics(self, results):
        RisingScore.calls += 1
        return dict(score=float(RisingScore.calls))


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the save catches it (not an Exception)."""


def _fd_name(fd):
    return osp.basename(os.readlink(f'/proc/self/fd/{fd}'))


def _file_name(f):
    """The name of the file an open file object writes to ('' for in-memory files)."""
    try:
        return _fd_name(f.fileno())
    except (OSError, ValueError):  # io.BytesIO: io.UnsupportedOperation
        return ''


class Fault:
    """Fails the ``nth`` time (1-based) ``step`` happens to a file whose name contains ``name``.

    Steps: ``write`` (torch.save writes half of the checkpoint, then fails), ``fsync``, ``replace``
    (the rename of the finished temporary file) and ``remove`` (of the old checkpoint).
    """

    def __init__(self, step, name, nth=1, error=None):
        self.step, self.name, self.nth = step, name, nth
        self.error = error if error is not None else Killed(f'killed at {step} of {name}')
        self.seen = 0

    def due(self, file_name):
        """Whether this event (on ``file_name``) is the one to fail."""
        if self.name not in file_name:
            return False
        self.seen += 1
        return self.seen == self.nth

    def hit(self, file_name):
        if self.due(file_name):
            raise self.error

    def install(self, monkeypatch):
        if self.step == 'write':
            real_save = torch.save

            def save(obj, f, *args, **kwargs):
                if self.due(_file_name(f)):
                    data = io.BytesIO()
                    real_save(obj, data, *args, **kwargs)
                    f.write(data.getvalue()[:len(data.getvalue()) // 2])
                    raise self.error
                return real_save(obj, f, *args, **kwargs)
            monkeypatch.setattr(torch, 'save', save)
            real_put = LocalBackend.put

            def put(backend, obj, filepath):  # MMEngine's own writer (without tat_mm's fix)
                if self.due(osp.basename(str(filepath))):
                    real_put(backend, obj[:len(obj) // 2], filepath)
                    raise self.error
                return real_put(backend, obj, filepath)
            monkeypatch.setattr(LocalBackend, 'put', put)
        elif self.step == 'fsync':
            real_fsync = os.fsync

            def fsync(fd):
                self.hit(_fd_name(fd))
                return real_fsync(fd)
            monkeypatch.setattr(os, 'fsync', fsync)
        elif self.step == 'replace':
            real_replace = os.replace

            def replace(src, dst):
                self.hit(osp.basename(dst))
                return real_replace(src, dst)
            monkeypatch.setattr(os, 'replace', replace)
        elif self.step == 'remove':
            real_remove = LocalBackend.remove

            def remove(backend, path):
                self.hit(osp.basename(path))
                return real_remove(backend, path)
            monkeypatch.setattr(LocalBackend, 'remove', remove)


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

# Each save of the run below fails once, at one step: (step, file it hits, error, whether the
# next resume continues from the new checkpoint). 'new' is the checkpoint being saved, 'old' the
# one it replaces (max_keep_ckpts=1), 'last_checkpoint' the record of the newest checkpoint.
STEPS = {
    'killed writing the checkpoint': ('write', 'new', None, False),
    'killed flushing the checkpoint': ('fsync', 'new', None, False),
    'killed before renaming the checkpoint': ('replace', 'new', None, False),
    'killed flushing last_checkpoint': ('fsync', 'last_checkpoint', None, False),
    'killed before renaming last_checkpoint': ('replace', 'last_checkpoint', None, False),
    'killed before removing the old checkpoint': ('remove', 'old', None, True),
    'disk full writing the checkpoint': ('write', 'new', ENOSPC, False),
    'disk full flushing last_checkpoint': ('fsync', 'last_checkpoint', ENOSPC, False),
}


def test_interrupted_saves_keep_a_checkpoint_that_resumes(tmp_path, monkeypatch):
    """One run, interrupted at each step of a save in turn (iterations 4, 6, ...): each time the
    previous checkpoint still loads and ``resume=True`` continues from a complete checkpoint."""
    work_dir = tmp_path / 'run'
    assert train(work_dir, max_iters=2) == [1, 2]
    resume_iter = 2
    for case, (step, target, error, resumes_new) in STEPS.items():
        new_iter = resume_iter + 2
        name = {'new': f'iter_{new_iter}.pth', 'old': f'iter_{resume_iter}.pth'}.get(target, target)
        fault = Fault(step, name, error=error)
        recorder = RecordIters()
        with monkeypatch.context() as patch:
            fault.install(patch)
            with pytest.raises((Killed, OSError)) as info:
                train(work_dir, max_iters=new_iter, resume=True, recorder=recorder)
        assert fault.seen == 1, f'{case}: the fault was not reached'
        # The run continued from where the previous interruption left it.
        assert recorder.iters == [resume_iter + 1, new_iter], case
        if error is not None:
            assert info.value.errno == errno.ENOSPC  # the run stops and says why
        # The previous checkpoint is whole and loads; no temporary file is left; the interrupted
        # one is either absent or complete.
        old = load_checkpoint_file(str(work_dir / f'iter_{resume_iter}.pth'))
        assert int(old['meta']['iter']) == resume_iter, case
        assert not glob(str(work_dir / '.*.tmp')), case
        new_path = str(work_dir / f'iter_{new_iter}.pth')
        assert not osp.exists(new_path) or is_complete_checkpoint(new_path), case
        if resumes_new:
            resume_iter = new_iter
        # --resume takes the checkpoint last_checkpoint names, which is complete.
        assert find_resumable_checkpoint(str(work_dir)) == str(
            work_dir / f'iter_{resume_iter}.pth'), case
    assert train(work_dir, max_iters=resume_iter + 2, resume=True) == [resume_iter + 1,
                                                                       resume_iter + 2]
    newest = str(work_dir / f'iter_{resume_iter + 2}.pth')
    assert (work_dir / 'last_checkpoint').read_text() == newest
    assert is_complete_checkpoint(newest)


def test_interrupted_best_checkpoint_save_keeps_the_previous_best(tmp_path, monkeypatch):
    """MMEngine removed the previous best checkpoint before writing the new one."""
    work_dir = tmp_path / 'run'
    fault = Fault('write', 'best_score_iter_4.pth')
    with monkeypatch.context() as patch:
        fault.install(patch)
        with pytest.raises(Killed):
            train(work_dir, max_iters=4, save_best=True)
    assert fault.seen == 1
    best_2 = load_checkpoint_file(str(work_dir / 'best_score_iter_2.pth'))
    assert int(best_2['meta']['iter']) == 2
    assert train(work_dir, max_iters=6, resume=True, save_best=True) == [5, 6]
    # The new best replaced the previous one once it was complete.
    assert sorted(osp.basename(p) for p in glob(str(work_dir / 'best_*.pth'))) == [
        'best_score_iter_6.pth']


@pytest.fixture(scope='module')
def two_checkpoints(tmp_path_factory):
    """A finished 4-iteration run with iter_2.pth and iter_4.pth."""
    work_dir = tmp_path_factory.mktemp('atomic') / 'run'
    assert train(work_dir, max_iters=4, max_keep_ckpts=2) == [1, 2, 3, 4]
    return work_dir


def _newest_log(work_dir):
    return open(max(glob(osp.join(work_dir, '*', '*.log')), key=osp.getmtime)).read()


def _damage_empty(work_dir):
    (work_dir / 'last_checkpoint').write_text('')


def _damage_missing(work_dir):
    (work_dir / 'last_checkpoint').unlink()


def _damage_dangling(work_dir):
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_6.pth'))


def _damage_truncated(work_dir):
    # What the unfixed writer left: a partial newest checkpoint that last_checkpoint names.
    data = (work_dir / 'iter_4.pth').read_bytes()
    (work_dir / 'iter_6.pth').write_bytes(data[:len(data) // 3])
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_6.pth'))


@pytest.mark.parametrize('damage, why, with_runner', [
    (_damage_empty, 'is empty', True), (_damage_dangling, 'which does not exist', True),
    (_damage_missing, 'there is no', False), (_damage_truncated, 'which is incomplete', False)])
def test_auto_resume_falls_back_to_the_newest_complete_checkpoint(two_checkpoints, tmp_path,
                                                                  monkeypatch, damage, why,
                                                                  with_runner):
    work_dir = tmp_path / 'run'
    shutil.copytree(two_checkpoints, work_dir)
    damage(work_dir)
    # A kill during a save leaves a hidden temporary file: never taken for a checkpoint.
    (work_dir / '.iter_8.pth.0123abcd.tmp').write_bytes(b'partial')
    expected = f'Resuming from {work_dir / "iter_4.pth"}, the newest complete checkpoint'
    if with_runner:  # a real resume=True run continues from iter_4.pth and logs why
        assert train(work_dir, max_iters=6, resume=True) == [5, 6]
        log = _newest_log(work_dir)
        assert expected in log and why in log
    else:  # the same function, called as the runner calls it
        messages = []
        monkeypatch.setattr(resumable_checkpoint, 'print_log',
                            lambda message, **kwargs: messages.append(message))
        assert mmengine.runner.runner.find_latest_checkpoint(str(work_dir)) == str(
            work_dir / 'iter_4.pth')
        assert len(messages) == 1 and expected in messages[0] and why in messages[0]


def test_resume_without_any_complete_checkpoint(tmp_path):
    assert find_resumable_checkpoint(str(tmp_path)) is None  # first launch: start from scratch
    (tmp_path / 'iter_2.pth').write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    # The run had saved: starting from scratch would silently throw its training away.
    with pytest.raises(FileNotFoundError, match=r'iter_2.pth, which is incomplete.*--resume '
                                                r'CHECKPOINT.*delete .*last_checkpoint'):
        find_resumable_checkpoint(str(tmp_path))


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / 'sub' / 'file.bin'
    with atomic_write(str(path)) as f:
        f.write(b'old')
    with pytest.raises(Killed):
        with atomic_write(str(path)) as f:
            f.write(b'new, half')
            raise Killed()
    assert path.read_bytes() == b'old' and os.listdir(path.parent) == ['file.bin']
    # What a kill leaves (no exception handler ran): removed by the next complete write.
    (path.parent / '.file.bin.0123abcd.tmp').write_bytes(b'new, half')
    (path.parent / '.other.bin.0123abcd.tmp').write_bytes(b'another file\'s')
    with atomic_write(str(path), 'w') as f:
        f.write('new')
    assert path.read_text() == 'new'
    assert sorted(os.listdir(path.parent)) == ['.other.bin.0123abcd.tmp', 'file.bin']
    # Permissions as open() gives them (0o666 less the umask), not mkstemp's 0o600.
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
