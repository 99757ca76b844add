"""A shipped config whose dataset is not there: one error with the path and how to get the data.

tools/train.py and tools/test.py check the datasets' files before they build the runner (no
model, no teacher download). Run in-process from an empty folder, the runner replaced by a
failure: the check must stop the tool first.
"""
import copy
import functools
import os
import os.path as osp
import runpy
import sys

import mmengine.config.config
import mmengine.config.utils
import pytest
from mmengine.config import Config
from mmengine.runner import Runner

import tat_mm  # noqa: F401
from tat_mm.engine.dataset_check import (DatasetFilesMissingError, check_dataset_files,
                                         missing_dataset_files)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VOC_TAT = osp.join(ROOT, 'configs', 'seg', 'deeplabv3plus_r101_to_r18_voc_tat.py')
COCO_TAT = osp.join(ROOT, 'configs', 'det', 'faster-rcnn_r101_to_r50_fpn_1x_coco_tat.py')


@pytest.fixture(scope='module')
def configs():
    """The shipped configs used here, parsed once (MMEngine re-reads every library's metafiles for
    each ``mm*::`` base; the answers do not change within the test)."""
    saved = mmengine.config.utils.load, mmengine.config.config.is_installed
    mmengine.config.utils.load = functools.lru_cache(maxsize=None)(saved[0])
    mmengine.config.config.is_installed = functools.lru_cache(maxsize=None)(saved[1])
    try:
        names = {'voc': VOC_TAT, 'coco': COCO_TAT,
                 'imagenet': 'cls/resnet34_to_resnet18_in1k_tat.py',
                 'cifar': 'cls/resnet32x4_to_resnet8x4_cifar100_tat.py',
                 'cocostuff': 'seg/deeplabv3plus_r101_to_r18_cocostuff_tat.py',
                 'digits': 'demo/det/tat.py'}
        return {k: Config.fromfile(osp.join(ROOT, 'configs', v)) for k, v in names.items()}
    finally:
        mmengine.config.utils.load, mmengine.config.config.is_installed = saved


@pytest.fixture
def empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _error(cfg, phases=('train', 'val')) -> str:
    with pytest.raises(DatasetFilesMissingError) as info:
        check_dataset_files(cfg, phases)
    return str(info.value)


def test_voc_names_its_root_and_mmseg_converter(configs, empty_folder):
    message = _error(configs['voc'])
    # one line for the one missing root (the train parts and val share it), the converter
    assert message.count('does not exist') == 1, message
    assert ('* data/VOCdevkit/VOC2012 does not exist (train_dataloader.dataset.datasets.0.'
            'data_root, PascalVOCDataset)') in message
    assert 'tools/dataset_converters/voc_aug.py data/VOCdevkit data/VOCdevkit/VOCaug' in message
    assert '2_dataset_prepare.md' in message and str(empty_folder) in message
    assert ('--cfg-options train_dataloader.dataset.datasets.0.data_root=/path/to/it'
            in message)


def test_voc_without_the_aug_masks_names_what_the_converter_writes(configs, empty_folder):
    voc = empty_folder / 'data' / 'VOCdevkit' / 'VOC2012'
    for folder in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        (voc / folder).mkdir(parents=True)
    for split in ('train', 'val'):
        (voc / 'ImageSets' / 'Segmentation' / f'{split}.txt').write_text('2007_000032\n')
    message = _error(configs['voc'])
    assert message.count('does not exist') == 1, message
    assert ('data/VOCdevkit/VOC2012/ImageSets/Segmentation/aug.txt does not exist '
            '(train_dataloader.dataset.datasets.1.ann_file') in message
    assert 'voc_aug.py' in message
    # converted: nothing missing
    (voc / 'SegmentationClassAug').mkdir()
    (voc / 'ImageSets' / 'Segmentation' / 'aug.txt').write_text('2007_000033\n')
    check_dataset_files(configs['voc'], ('train', 'val'))


def test_coco_imagenet_and_coco_stuff_say_how_to_get_them(configs, empty_folder):
    coco = _error(configs['coco'])
    assert '* data/coco/ does not exist (train_dataloader.dataset.data_root, CocoDataset)' in coco
    # the evaluator's annotation file is below the missing root: not listed again
    assert coco.count('does not exist') == 1, coco
    assert 'tools/misc/download_dataset.py --dataset-name coco2017' in coco
    imagenet = _error(configs['imagenet'])
    assert '* data/imagenet does not exist (train_dataloader.dataset.data_root, ImageNet)' in (
        imagenet)
    assert 'meta/train.txt' in imagenet and 'mmpretrain docs' in imagenet
    stuff = _error(configs['cocostuff'])
    assert 'data/coco_stuff164k' in stuff and 'coco_stuff164k.py data/coco_stuff164k' in stuff
    # tools/test.py checks the test loop only
    assert 'test_dataloader.dataset.data_root' in _error(configs['coco'], ('test',))


def test_coco_evaluator_file_is_checked_once_the_images_are_there(configs, empty_folder):
    for folder in ('train2017', 'val2017', 'annotations'):
        (empty_folder / 'data' / 'coco' / folder).mkdir(parents=True)
    (empty_folder / 'data/coco/annotations/instances_train2017.json').write_text('{}')
    message = _error(configs['coco'])
    # the val dataset's file, then the evaluator's (the same file, named once)
    assert message.count('does not exist') == 1, message
    assert 'instances_val2017.json does not exist (val_dataloader.dataset.ann_file' in message


def test_datasets_that_make_their_files_are_not_checked(configs, empty_folder):
    # mmpretrain's CIFAR-100 downloads itself (download=True, its default); the digits are written
    assert missing_dataset_files(configs['cifar'], ('train', 'val', 'test')) == []
    assert missing_dataset_files(configs['digits'], ('train', 'val', 'test')) == []
    cifar = copy.deepcopy(configs['cifar'])
    cifar.train_dataloader.dataset.download = False
    message = _error(cifar)
    assert 'data/cifar100 does not exist' in message and 'download=True' in message


def _run_tool(monkeypatch, *argv) -> str:
    """Run a tool's ``main`` in-process; the runner must not be reached."""

    def no_runner(cfg):
        raise AssertionError('the runner was built before the data check')

    monkeypatch.setattr(Runner, 'from_cfg', staticmethod(no_runner))
    monkeypatch.syspath_prepend(osp.join(ROOT, 'tools'))
    monkeypatch.setattr(sys, 'argv', list(argv))
    with pytest.raises(SystemExit) as info:
        runpy.run_path(osp.join(ROOT, 'tools', argv[0]), run_name='__main__')
    return str(info.value.code)


def test_tools_stop_before_the_runner_with_the_message(empty_folder, monkeypatch):
    message = _run_tool(monkeypatch, 'train.py', VOC_TAT, '--work-dir', 'w')
    assert message.startswith('tools/train.py: error: the dataset files of this config are not')
    assert 'data/VOCdevkit/VOC2012 does not exist' in message and 'voc_aug.py' in message
    message = _run_tool(monkeypatch, 'test.py', COCO_TAT, 'no_such_checkpoint.pth')
    assert message.startswith('tools/test.py: error:') and 'data/coco/ does not exist' in message
    assert 'tools/test.py CONFIG CHECKPOINT --cfg-options test_dataloader' in message
    assert not os.listdir(empty_folder)  # nothing written (no work dir, no downloads)
