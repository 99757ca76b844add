"""Distributed runs get a collective timeout, so that a stuck rank ends the job within minutes."""
import multiprocessing
import os
import os.path as osp
import socket
import subprocess
import sys
import time

from mmengine.config import Config

import tat_mm  # noqa: F401
from tat_mm.engine.dist_timeout import DEFAULT_DIST_TIMEOUT_S, set_default_dist_timeout

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dist_env(rank: int, world_size: int, port: int) -> dict:
    return dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                OMP_NUM_THREADS='1', PYTHONPATH=ROOT)


def test_default_is_set_only_for_distributed_runs_without_one():
    assert DEFAULT_DIST_TIMEOUT_S == 300  # minutes, not torch's 30 (gloo) / 10 (NCCL)
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='gloo'))))
    assert not set_default_dist_timeout(cfg, 'none') and 'timeout' not in cfg.env_cfg.dist_cfg
    assert set_default_dist_timeout(cfg, 'pytorch')
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo', timeout=DEFAULT_DIST_TIMEOUT_S)
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=1800))))
    assert not set_default_dist_timeout(cfg, 'slurm') and cfg.env_cfg.dist_cfg.timeout == 1800
    cfg = Config(dict())  # no env_cfg: the Runner's default (nccl), with the timeout
    assert set_default_dist_timeout(cfg, 'pytorch')
    assert cfg.env_cfg.dist_cfg == dict(backend='nccl', timeout=DEFAULT_DIST_TIMEOUT_S)


def test_tools_train_passes_the_timeout_to_the_runner(tmp_path):
    """tools/train.py --launcher pytorch (as dist_train.sh runs it; one process here)."""
    work_dir = tmp_path / 'run'
    subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
         osp.join(ROOT, 'configs', 'demo', 'cls', 'student.py'), '--launcher', 'pytorch',
         '--work-dir', str(work_dir), '--cfg-options', 'train_cfg.max_iters=1',
         'default_hooks.checkpoint.interval=1', 'val_dataloader.dataset.indices=8',
         'log_level=WARNING'],
        check=True, cwd=str(tmp_path), env=_dist_env(0, 1, _free_port()), timeout=300)
    dumped = Config.fromfile(str(work_dir / 'student.py'))
    assert dumped.env_cfg.dist_cfg.timeout == DEFAULT_DIST_TIMEOUT_S
    assert dumped.launcher == 'pytorch'


def _stuck_rank_group(rank: int, port: int, results) -> None:
    """One rank of a 2-process gloo group in which rank 1 stops answering."""
    import torch
    import torch.distributed as dist
    from mmengine.dist import init_dist
    os.environ.update(_dist_env(rank, 2, port))
    init_dist('pytorch', backend='gloo', timeout=3)  # what env_cfg.dist_cfg gives MMEngine
    if rank == 1:
        time.sleep(120)  # stuck (a stalled loader, a stopped process)
        os._exit(0)
    start = time.time()
    try:
        dist.all_reduce(torch.ones(1))
        results.put(('completed', time.time() - start, ''))
    except RuntimeError as exc:
        results.put(('timed out', time.time() - start, str(exc)))
    os._exit(0)  # at once: a normal exit would wait to shut the group down with rank 1


def test_a_stuck_rank_ends_the_wait_at_the_timeout():
    """A real 2-process gloo group (forked: tat_mm's CPU fix is already applied): rank 0's
    all-reduce fails once MMEngine's ``timeout`` passed, not after gloo's 30 minutes."""
    context = multiprocessing.get_context('fork')
    results = context.Queue()
    port = _free_port()
    procs = [context.Process(target=_stuck_rank_group, args=(rank, port, results))
             for rank in (0, 1)]
    for proc in procs:
        proc.start()
    try:
        outcome, seconds, message = results.get(timeout=120)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join()
    assert outcome == 'timed out', message
    assert 2.5 < seconds < 30 and 'Timed out' in message, (seconds, message)
