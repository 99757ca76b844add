"""Test (evaluate) a checkpoint with an MMEngine runner, like mm* tools/test.py.

Works for distiller checkpoints (the student is evaluated) and for plain model checkpoints,
including students exported by tools/export_student.py.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]
"""
import use_venv  # noqa: F401,I001  (first: re-runs this tool with ./.venv/bin/python if needed)
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import tat_mm  # noqa: F401  (stack fixes + registries)
from tat_mm.cfg_options import check_cfg_options
from tat_mm.engine.dataset_check import DatasetFilesMissingError, check_dataset_files


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the file containing evaluation '
                        'metrics')
    parser.add_argument('--out', type=str, help='dump the predictions to a pickle file')
    parser.add_argument('--show-dir', help='directory where painted images will be saved')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config (key=value pairs)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def skip_teacher_weights(cfg: Config) -> None:
    """Evaluating a distiller runs its student only: build the teacher without its checkpoint.

    So testing needs neither the teacher file nor its download. Training still loads and checks it
    when the distiller is built. Tap validation (``validate_taps``) runs the teacher: it is off too.
    """
    model = cfg.get('model')
    teacher = model.get('teacher') if isinstance(model, dict) else None
    if isinstance(teacher, dict) and 'config' in teacher and str(model.get('type')).endswith(
            'Distiller'):
        teacher['load_checkpoint'] = False
        if model.get('validate_taps'):
            model['validate_taps'] = False


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        check_cfg_options(cfg, args.cfg_options)  # e.g. a `teacher_checkpoint` variable: an error
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    # Loaded weights-only with tat_mm's allow-list (tat_mm/checkpoint_loading.py); a file that needs
    # more is refused unless listed in TAT_MM_TRUST_CHECKPOINTS.
    cfg.load_from = args.checkpoint
    skip_teacher_weights(cfg)

    if args.show_dir:
        vis_hook = cfg.default_hooks.get('visualization')
        if vis_hook is None:
            raise ValueError('--show-dir needs a `visualization` hook in default_hooks.')
        vis_hook['draw'] = True
        vis_hook['interval'] = 1
        if 'test_out_dir' in vis_hook or vis_hook.get('type') == 'SegVisualizationHook':
            vis_hook['test_out_dir'] = args.show_dir  # mmdet/mmpretrain hooks use out_dir
        else:
            vis_hook['out_dir'] = args.show_dir

    try:  # a dataset that is not there: one error with the path and how to get it
        check_dataset_files(cfg, ('test',), command='tools/test.py CONFIG CHECKPOINT')
    except DatasetFilesMissingError as e:
        raise SystemExit(f'tools/test.py: error: {e}')

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        from mmengine.registry import RUNNERS
        runner = RUNNERS.build(cfg)

    if args.out is not None:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
