"""Before the runner is built: do the files the config's datasets read exist?

A shipped config trains on a public dataset that must be downloaded and, for some, converted
first (Pascal VOC + SBD, COCO-Stuff, COCO, ImageNet). Without it, MMEngine fails deep in a
traceback (``Failed to load ann_file ...``), after the teacher was built and its checkpoint
downloaded. ``tools/train.py`` and ``tools/test.py`` call :func:`check_dataset_files` first: one
error naming each missing path, the config key that sets it, and how to get the data (the task
library's converter, download script or docs).

Checked, for every dataset below a dataloader (through ``ConcatDataset`` / ``RepeatDataset`` /
... wrappers): ``data_root``, then ``ann_file`` and the ``data_prefix`` folders (relative to
``data_root`` as MMEngine joins them), and an evaluator's ``ann_file`` (COCO metrics read it).
Not checked: datasets that make their files themselves (tat_mm's digits; mmpretrain's CIFAR /
MNIST with ``download=True``, their default), files on a non-local backend (``s3://``, ...).
"""
import os
import os.path as osp
from importlib.util import find_spec
from typing import Dict, Iterator, List, Sequence, Tuple

#: Datasets that write their files on first use (tat_mm's built-in digits).
WRITES_ITS_FILES = ('DigitsClassificationDataset', 'DigitsSegDataset', 'DigitsDetDataset')
#: mmpretrain's datasets that download themselves when ``download`` is true (their default).
DOWNLOADS_ITSELF = ('CIFAR10', 'CIFAR100', 'MNIST', 'FashionMNIST')


class DatasetFilesMissingError(FileNotFoundError):
    """A dataset's ``data_root``, ``ann_file`` or ``data_prefix`` folder does not exist."""


def _library_tool(package: str, relative: str) -> str:
    """``<package>/.mim/<relative>`` of the installed task library, else its repository path."""
    spec = find_spec(package)
    if spec is not None and spec.origin is not None:
        path = osp.join(osp.dirname(spec.origin), '.mim', relative)
        if osp.isfile(path):
            return path
    return relative


def _how_to_get(dataset_type: str) -> str:
    """What to download and run for ``dataset_type`` (a generic answer for types not listed)."""
    if dataset_type == 'PascalVOCDataset':
        return (
            'Pascal VOC 2012 with the SBD masks ("aug" split): extract VOCtrainval_11-May-2012.tar '
            'into data/VOCdevkit (it holds VOC2012/) and SBD\'s benchmark.tgz beside it, its '
            'benchmark_RELEASE/ renamed data/VOCdevkit/VOCaug (it holds dataset/cls/), then write '
            'SegmentationClassAug/ and ImageSets/Segmentation/aug.txt with mmseg\'s converter:\n'
            f'  python {_library_tool("mmseg", "tools/dataset_converters/voc_aug.py")} '
            'data/VOCdevkit data/VOCdevkit/VOCaug --nproc 8\n'
            '(mmsegmentation docs: user_guides/2_dataset_prepare.md, "Pascal VOC").')
    if dataset_type == 'COCOStuffDataset':
        return (
            'COCO-Stuff 164k: extract COCO\'s train2017.zip and val2017.zip into '
            'data/coco_stuff164k/images and stuffthingmaps_trainval2017.zip into '
            'data/coco_stuff164k/annotations, then convert the masks with mmseg\'s converter:\n'
            f'  python {_library_tool("mmseg", "tools/dataset_converters/coco_stuff164k.py")} '
            'data/coco_stuff164k --nproc 8\n'
            '(mmsegmentation docs: user_guides/2_dataset_prepare.md, "COCO Stuff 164k").')
    if dataset_type == 'CocoDataset':
        return (
            'COCO 2017: train2017/, val2017/ and annotations/instances_{train,val}2017.json '
            '(train2017.zip, val2017.zip, annotations_trainval2017.zip from cocodataset.org) '
            'under data/coco; mmdet\'s script downloads them (and the rest of COCO 2017):\n'
            f'  python {_library_tool("mmdet", "tools/misc/download_dataset.py")} '
            '--dataset-name coco2017 --save-dir data/coco --unzip\n'
            '(mmdetection docs: user_guides/dataset_prepare.md).')
    if dataset_type == 'ImageNet':
        return (
            'ImageNet-1k (ILSVRC 2012, from image-net.org after registration) in mmpretrain\'s '
            'layout: data/imagenet/train/<class>/*.JPEG, data/imagenet/val/ and the image lists '
            'data/imagenet/meta/train.txt and meta/val.txt ("<path> <label>" lines)\n'
            '(mmpretrain docs: user_guides/dataset_prepare.md, "ImageNet").')
    if dataset_type in DOWNLOADS_ITSELF:
        return (f'mmpretrain\'s {dataset_type} downloads itself into data_root with download=True '
                '(its default; this config sets download=False).')
    return ('Prepare it as the task library\'s docs say (user_guides/dataset_prepare.md of '
            'mmpretrain / mmdetection, user_guides/2_dataset_prepare.md of mmsegmentation).')


def _type_name(dataset_type) -> str:
    """A dataset ``type`` as its class name (``'mmseg.PascalVOCDataset'``, a class, ...)."""
    name = getattr(dataset_type, '__name__', None) or str(dataset_type)
    return name.rsplit('.', 1)[-1]


def _is_local(path) -> bool:
    return isinstance(path, str) and bool(path) and '://' not in path


def _leaf_datasets(dataset, key: str) -> Iterator[Tuple[str, dict]]:
    """``(config key, dataset dict)`` of every dataset inside wrappers (``dataset=``,
    ``datasets=[...]``)."""
    if not isinstance(dataset, dict):
        return
    if isinstance(dataset.get('datasets'), (list, tuple)):
        for i, inner in enumerate(dataset['datasets']):
            yield from _leaf_datasets(inner, f'{key}.datasets.{i}')
    elif isinstance(dataset.get('dataset'), dict):
        yield from _leaf_datasets(dataset['dataset'], f'{key}.dataset')
    else:
        yield key, dataset


def _dataset_paths(dataset: dict) -> List[Tuple[str, str]]:
    """``(setting, path)`` pairs the dataset reads, ``data_root`` first, joined as MMEngine does."""
    root = dataset.get('data_root')
    paths = [('data_root', root)] if _is_local(root) else []
    if isinstance(root, str) and not _is_local(root) and root:
        return []  # a remote root: everything below it is remote too
    prefix = dataset.get('data_prefix')
    prefixes = prefix.items() if isinstance(prefix, dict) else [('', prefix)]
    relative = [('ann_file', dataset.get('ann_file'))] + [
        (f'data_prefix.{name}' if name else 'data_prefix', p) for name, p in prefixes]
    for setting, path in relative:
        if _is_local(path):
            joined = path if osp.isabs(path) or not root else osp.join(root, path)
            paths.append((setting, joined))
    return paths


def _on_local_backend(dataset: dict) -> bool:
    backend = (dataset.get('backend_args') or {}).get('backend', 'local')
    return backend in ('local', 'disk')


def missing_dataset_files(cfg, phases: Sequence[str]) -> List[Dict[str, str]]:
    """The missing files of the datasets (and evaluators) a run of ``phases`` reads.

    Args:
        cfg (Config): The run's config.
        phases (Sequence[str]): Any of ``'train'``, ``'val'``, ``'test'``. ``'val'`` and
            ``'test'`` count only when the config has that loop (``val_cfg`` / ``test_cfg``),
            as MMEngine builds it only then.

    Returns:
        list[dict]: One entry per missing path (the first missing of each dataset: a missing
        ``data_root`` hides what is below it), with ``path``, ``key`` (the config key that sets
        it), ``type`` (the dataset class name) and ``hint`` (how to get the data).
    """
    missing, seen, created_roots = [], set(), []
    checked = []
    for phase in phases:
        if phase != 'train' and cfg.get(f'{phase}_cfg') is None:
            continue
        loader = cfg.get(f'{phase}_dataloader')
        if isinstance(loader, dict):
            checked += list(_leaf_datasets(loader.get('dataset'), f'{phase}_dataloader.dataset'))
    for key, dataset in checked:
        name = _type_name(dataset.get('type'))
        makes_files = name in WRITES_ITS_FILES or (name in DOWNLOADS_ITSELF
                                                   and dataset.get('download', True))
        if makes_files:
            if _is_local(dataset.get('data_root')):
                created_roots.append(osp.normpath(dataset['data_root']))
            continue
        if not _on_local_backend(dataset):
            continue
        for setting, path in _dataset_paths(dataset):
            if not osp.exists(path):
                if path not in seen:
                    seen.add(path)
                    missing.append(dict(path=path, key=f'{key}.{setting}', type=name,
                                        hint=_how_to_get(name)))
                break
    for phase in phases:
        if phase == 'train' or cfg.get(f'{phase}_cfg') is None:
            continue
        evaluators = cfg.get(f'{phase}_evaluator')
        evaluators = evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]
        for i, evaluator in enumerate(evaluators):
            path = evaluator.get('ann_file') if isinstance(evaluator, dict) else None
            if not _is_local(path) or osp.exists(path) or path in seen:
                continue
            if any(osp.normpath(path).startswith(root + os.sep) for root in created_roots):
                continue  # written with its dataset
            if any(osp.normpath(path).startswith(osp.normpath(entry['path']) + os.sep)
                   for entry in missing):
                continue  # below a missing data_root: already named
            index = f'.{i}' if len(evaluators) > 1 else ''
            seen.add(path)
            missing.append(dict(path=path, key=f'{phase}_evaluator{index}.ann_file',
                                type=_type_name(evaluator.get('type')),
                                hint=_how_to_get(_evaluated_dataset(cfg, phase))))
    return missing


def _evaluated_dataset(cfg, phase: str) -> str:
    """The dataset class name of ``phase``'s dataloader (what its evaluator's file belongs to)."""
    loader = cfg.get(f'{phase}_dataloader') or {}
    leaves = list(_leaf_datasets(loader.get('dataset'), ''))
    return _type_name(leaves[0][1].get('type')) if leaves else ''


def check_dataset_files(cfg, phases: Sequence[str],
                        command: str = 'tools/train.py CONFIG') -> None:
    """Raise one error naming every missing dataset path of a run and how to get the data.

    Args:
        cfg (Config): The run's config (after ``--cfg-options``).
        phases (Sequence[str]): The loops the run builds: ``('train', 'val')`` for training,
            ``('test',)`` for testing.
        command (str): The command line, for the error's ``--cfg-options`` example. Defaults to
            ``'tools/train.py CONFIG'``.

    Raises:
        DatasetFilesMissingError: When a path is missing.
    """
    missing = missing_dataset_files(cfg, phases)
    if not missing:
        return
    lines = [f'the dataset files of this config are not there (relative paths are relative to '
             f'the current folder, {os.getcwd()}):']
    for entry in missing:
        lines.append(f'* {entry["path"]} does not exist ({entry["key"]}, {entry["type"]})')
    for hint in dict.fromkeys(entry['hint'] for entry in missing):
        lines.append(hint)
    lines.append(
        'If the data is elsewhere, point the config at it, e.g. '
        f'`{command} --cfg-options {missing[0]["key"]}=/path/to/it` '
        '(each dataloader of the config has its own setting), or link it to the path above.')
    raise DatasetFilesMissingError('\n'.join(lines))
