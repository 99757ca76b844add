"""Train a model (a distiller or a plain model) with an MMEngine runner, like mm* tools/train.py.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG GPUS [args]
"""
import use_venv  # noqa: F401,I001  (first: re-runs this tool with ./.venv/bin/python if needed)
import argparse
import logging
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

import tat_mm  # noqa: F401  (stack fixes + registries, even if the config forgets custom_imports)
from tat_mm.cfg_options import check_cfg_options
from tat_mm.engine.dataset_check import DatasetFilesMissingError, check_dataset_files
from tat_mm.engine.dist_timeout import set_default_dist_timeout


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model (tat_mm distiller or plain)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or, with no value, from the latest checkpoint in '
        'the work dir')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, e.g. train_cfg.max_iters=100 (key=value pairs; '
        'lists as key="[a,b]")')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads per process (default: torch\'s choice, one per '
                        'core). On a CPU machine shared with other jobs, 1 is much faster '
                        '(measured in docs/demo.md)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank / --local_rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _type_name(optim_type) -> str:
    """A config ``type`` as a name (new-style configs give the class itself)."""
    return getattr(optim_type, '__name__', optim_type) or 'OptimWrapper'


def check_amp_device(what: str = '--amp') -> None:
    """Stop at once, before the model is built, when AMP cannot run on this machine.

    MMEngine's ``AmpOptimWrapper`` (torch.cuda.amp's loss scaler) needs a GPU (or NPU / MLU /
    MUSA); without one it fails with an ``AssertionError`` only after the model is built.
    """
    from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                                 is_npu_available)
    if not (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available()):
        raise SystemExit(
            f'tools/train.py: error: {what} needs a GPU (MMEngine\'s AmpOptimWrapper, with '
            'torch.cuda.amp\'s loss scaler), and this machine has none (torch.cuda.is_available() '
            'is False). On CPU, train in float32: run without --amp (and without '
            'optim_wrapper.type=AmpOptimWrapper). See docs/amp_and_cuda.md.')


def enable_amp(cfg) -> None:
    """``--amp``: MMEngine's ``AmpOptimWrapper`` with dynamic loss scaling, as mm* tools do.

    Args:
        cfg (Config): The config; its ``optim_wrapper.type`` is switched in place.
    """
    check_amp_device()
    optim_type = _type_name(cfg.optim_wrapper.get('type'))
    if optim_type == 'AmpOptimWrapper':
        print_log('AMP training is already enabled in your config.', logger='current',
                  level=logging.WARNING)
        return
    if optim_type != 'OptimWrapper':
        raise SystemExit(
            f'tools/train.py: error: --amp replaces the optimizer wrapper OptimWrapper by '
            f'AmpOptimWrapper, but this config\'s optim_wrapper.type is {optim_type!r}, which '
            'it cannot replace (mixed precision needs AmpOptimWrapper\'s loss scaler). Run '
            f'without --amp, or, if {optim_type} adds nothing you need, set '
            "optim_wrapper.type='AmpOptimWrapper' (loss_scale='dynamic') in the config.")
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def main():
    args = parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        check_cfg_options(cfg, args.cfg_options)  # e.g. a `teacher_checkpoint` variable: an error
        cfg.merge_from_dict(args.cfg_options)
    # Distributed: a stuck rank ends the job within minutes (env_cfg.dist_cfg.timeout, seconds).
    set_default_dist_timeout(cfg, args.launcher)

    # work_dir priority: CLI > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        enable_amp(cfg)
    elif _type_name(cfg.get('optim_wrapper', {}).get('type')) == 'AmpOptimWrapper':
        check_amp_device('optim_wrapper.type=AmpOptimWrapper in the config')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    # A dataset that is not there: one error with the path and how to get it, before the runner
    # builds the model (and downloads the teacher).
    try:
        check_dataset_files(cfg, ('train', 'val'))
    except DatasetFilesMissingError as e:
        raise SystemExit(f'tools/train.py: error: {e}')

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        from mmengine.registry import RUNNERS
        runner = RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
