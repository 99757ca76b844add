"""Draw the demo figures from a finished (or partly finished) ``tools/demo.py`` work dir.

    python tools/visualize.py [--work-dir work_dirs/demo] [--tasks cls seg det] [--out DIR]

Per task, into ``<work-dir>/figures/`` (or ``--out``), each figure only if its runs exist:

* ``<task>_tat_attention.png``  (a) TaT attention of a teacher pixel over the student map (tat run)
* ``<task>_dam_areas.png``      (b) areas DAM picked on teacher and student features (tat_dam run)
* ``<task>_predictions.png``    (c) teacher / student alone / TaT student on the same val images
* ``<task>_loss_curves.png``    (d) training losses of every method (seed 0)

See :mod:`tat_mm.demo.figures` for what exactly is drawn (and which attention row).
"""
import use_venv  # noqa: F401,I001  (first: re-runs this tool with ./.venv/bin/python if needed)
import argparse
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--tasks', nargs='+', choices=('cls', 'seg', 'det'),
                        default=['cls', 'seg', 'det'])
    parser.add_argument('--out', default=None, help='output folder (default: <work-dir>/figures)')
    args = parser.parse_args(argv)
    import tat_mm  # noqa: F401
    from tat_mm.demo.figures import make_task_figures
    out = args.out or osp.join(args.work_dir, 'figures')
    for task in args.tasks:
        if not osp.isdir(osp.join(args.work_dir, task)):
            print(f'{task}: no runs under {args.work_dir}, skipped')
            continue
        for path in make_task_figures(task, args.work_dir, out):
            print(path)


if __name__ == '__main__':
    main()
