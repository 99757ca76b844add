"""Distributed runs get a collective timeout, so that a stuck rank ends the job within minutes."""
import multiprocessing
import os
import os.path as osp
import socket
import sys
import time

import pytest
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


class _RunnerBuilt(Exception):
    """Raised instead of building the runner: the test only needs the config it gets."""


@pytest.mark.parametrize('launcher, timeout', [('pytorch', DEFAULT_DIST_TIMEOUT_S),
                                               ('slurm', DEFAULT_DIST_TIMEOUT_S), ('none', None)])
def test_tools_train_gives_the_runner_the_timeout(tmp_path, monkeypatch, launcher, timeout):
    """tools/train.py as dist_train.sh (--launcher pytorch) / slurm_train.sh run it: the config
    the runner gets, which MMEngine's Runner.setup_env passes to init_dist."""
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        import train as train_tool
    finally:
        sys.path.pop(0)
    seen = {}

    def from_cfg(cfg):
        seen['cfg'] = cfg
        raise _RunnerBuilt()

    monkeypatch.setattr(train_tool.Runner, 'from_cfg', from_cfg)
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args sets it; restored after the test
    monkeypatch.setattr(sys, 'argv', [
        'train.py', osp.join(ROOT, 'configs', 'demo', 'cls', 'student.py'), '--launcher',
        launcher, '--work-dir', str(tmp_path)])
    with pytest.raises(_RunnerBuilt):
        train_tool.main()
    assert seen['cfg'].env_cfg.dist_cfg.get('timeout') == timeout
    assert seen['cfg'].env_cfg.dist_cfg.backend == 'gloo'  # the demo config's, kept


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
        results.send(('completed', time.time() - start, ''))
    except RuntimeError as exc:
        results.send(('timed out', time.time() - start, str(exc)))
    os._exit(0)  # at once: a normal exit would wait to shut the group down with rank 1


def test_a_stuck_rank_ends_the_wait_at_the_timeout():
    """A real 2-process gloo group (forked: tat_mm's CPU fix is already applied): rank 0's
    all-reduce fails once MMEngine's ``timeout`` passed, not after gloo's 30 minutes."""
    context = multiprocessing.get_context('fork')
    reader, results = context.Pipe(duplex=False)  # send() is written before os._exit
    port = _free_port()
    procs = [context.Process(target=_stuck_rank_group, args=(rank, port, results))
             for rank in (0, 1)]
    for proc in procs:
        proc.start()
    try:
        assert reader.poll(120), 'rank 0 still waits after 120 s'
        outcome, seconds, message = reader.recv()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join()
    assert outcome == 'timed out', message
    assert 2.5 < seconds < 30 and 'Timed out' in message, (seconds, message)
