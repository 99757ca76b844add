"""A collective-operation timeout for distributed runs, so that a stuck rank ends the job.

torch's default is 30 minutes for gloo and 10 for NCCL: a rank that hangs (a stalled data loader,
a stopped process, a dead file system) keeps every other rank waiting that long, with no message.
MMEngine passes ``env_cfg.dist_cfg.timeout`` (seconds) through ``init_dist`` to
``torch.distributed.init_process_group``; ``tools/train.py`` sets it to
:data:`DEFAULT_DIST_TIMEOUT_S` for distributed launches (``tools/dist_train.sh``,
``tools/slurm_train.sh``) whose config sets none. A collective that waits longer fails on the
waiting ranks, and the launcher (torchrun, ``srun --kill-on-bad-exit``) then ends the job.
"""
from mmengine.config import Config

# Five minutes: long enough for what one rank legitimately does while the others wait in a
# collective (rank 0 alone computes the metrics after validation, e.g. COCO bbox + segm in about
# 1-3 minutes on val2017, and saves checkpoints), short enough that a stuck rank costs minutes.
DEFAULT_DIST_TIMEOUT_S = 300


def set_default_dist_timeout(cfg: Config, launcher: str) -> bool:
    """Give a distributed run ``env_cfg.dist_cfg.timeout`` unless its config sets one.

    Args:
        cfg (Config): The run's config (changed in place).
        launcher (str): ``'none'`` (one process: nothing to do), ``'pytorch'``, ``'slurm'`` or
            ``'mpi'``.

    Returns:
        bool: Whether the default was set.
    """
    if launcher == 'none':
        return False
    if cfg.get('env_cfg') is None:
        cfg.env_cfg = dict(dist_cfg=dict(backend='nccl'))  # the Runner's default env_cfg
    if cfg.env_cfg.get('dist_cfg') is None:
        cfg.env_cfg.dist_cfg = dict()
    if cfg.env_cfg.dist_cfg.get('timeout') is not None:
        return False
    cfg.env_cfg.dist_cfg.timeout = DEFAULT_DIST_TIMEOUT_S
    return True
