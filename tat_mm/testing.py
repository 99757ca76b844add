"""Helpers shared by the tests and the benchmarks: offline model configs and small fake batches.

Upstream configs point ``pretrained`` / ``init_cfg`` at download URLs and use ``SyncBN``; on a
machine without internet or GPU these fail. :func:`offline_model_config` rewrites a model config so
it builds and trains on CPU, offline, and :func:`fake_batch` makes a batch in the form the task's
dataloader yields (what ``model.train_step`` receives).
"""
import copy
import importlib
from typing import Optional, Tuple

import torch
from mmengine.registry import DefaultScope

from .distill.offline_init import init_weights_offline
from .distill.teacher import resolve_model_config


def _strip(node):
    """SyncBN -> BN and no pre-training downloads, recursively, in place."""
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
        if 'pretrained' in node and isinstance(node['pretrained'], str):
            node['pretrained'] = None
        init_cfg = node.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            node['init_cfg'] = None
        for value in node.values():
            _strip(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _strip(value)
    return node


def offline_model_config(config, num_classes: Optional[int] = None,
                         input_size: Optional[Tuple[int, int]] = None) -> dict:
    """A model config that builds and trains on CPU without internet.

    Args:
        config (str | dict): Config path (local or ``'mmseg::...'``), full config or model dict.
        num_classes (int, optional): Override every ``num_classes`` in the model. Defaults to None.
        input_size (tuple, optional): (H, W) the segmentation data preprocessor pads to (upstream
            configs pad to the training crop, e.g. 512x1024). Defaults to None.

    Returns:
        dict: The model config.
    """
    model = _strip(copy.deepcopy(resolve_model_config(config)))

    def set_classes(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'num_classes' and num_classes is not None:
                    node[key] = num_classes
                else:
                    set_classes(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                set_classes(value)

    set_classes(model)
    preprocessor = model.get('data_preprocessor')
    if input_size is not None and preprocessor is not None and 'size' in preprocessor:
        preprocessor['size'] = tuple(input_size)
    return model


def fake_batch(task: str, batch_size: int = 2, size: Tuple[int, int] = (64, 64),
               num_classes: int = 10, seed: int = 0, with_masks: bool = False) -> dict:
    """A random batch as the task's dataloader yields it: ``dict(inputs=[...], data_samples=[...])``.

    Args:
        task (str): 'cls' (mmpretrain), 'seg' (mmseg) or 'det' (mmdet).
        batch_size (int): Defaults to 2.
        size (tuple): Image (H, W). Defaults to (64, 64).
        num_classes (int): Defaults to 10.
        seed (int): Defaults to 0.
        with_masks (bool): 'det' only: also give each box an instance mask (``BitmapMasks``, the
            box filled), as instance-segmentation models (Mask R-CNN) need. Defaults to False.

    Returns:
        dict: Inputs are uint8 (3, H, W) tensors; data samples carry the ground truth.
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    inputs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
              for _ in range(batch_size)]
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1.0, 1.0))
    samples = []
    for _ in range(batch_size):
        if task == 'cls':
            from mmpretrain.structures import DataSample
            sample = DataSample().set_gt_label(int(torch.randint(0, num_classes, (1, ), generator=gen)))
        elif task == 'seg':
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
            sample.gt_sem_seg = PixelData(
                data=torch.randint(0, num_classes, (1, h, w), generator=gen))
        elif task == 'det':
            from mmdet.structures import DetDataSample
            from mmengine.structures import InstanceData
            sample = DetDataSample(metainfo=meta)
            xy = torch.rand(3, 2, generator=gen) * torch.tensor([w * 0.6, h * 0.6])
            wh = torch.rand(3, 2, generator=gen) * torch.tensor([w * 0.3, h * 0.3]) + 8
            sample.gt_instances = InstanceData(
                bboxes=torch.cat([xy, xy + wh], dim=1),
                labels=torch.randint(0, num_classes, (3, ), generator=gen))
            if with_masks:
                from mmdet.structures.mask import BitmapMasks
                masks = torch.zeros(3, h, w, dtype=torch.uint8)
                for i, (x1, y1, x2, y2) in enumerate(sample.gt_instances.bboxes.tolist()):
                    masks[i, int(y1):int(y2) + 1, int(x1):int(x2) + 1] = 1
                sample.gt_instances.masks = BitmapMasks(masks.numpy(), h, w)
        else:
            raise ValueError(f"task must be 'cls', 'seg' or 'det'; got {task!r}")
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def save_random_checkpoint(scope: str, model_cfg: dict, path, seed: int = 0,
                           calibrate_bn: bool = False, init_weights: bool = False) -> str:
    """Build ``model_cfg`` in ``scope`` with random weights and save an MMEngine-style checkpoint.

    Stands in for a trained teacher checkpoint in tests and benchmarks (no downloads here).

    Args:
        scope (str): 'mmpretrain', 'mmseg' or 'mmdet'.
        model_cfg (dict): The model config (see :func:`offline_model_config`).
        path (str | Path): Where to write it.
        seed (int): Weight-initialisation seed. Defaults to 0.
        calibrate_bn (bool): Give BN real running statistics from a few random batches. With the
            initial ones (0/1) a random deep net's eval-mode features are nearly constant over
            space, which makes attention uniform and can hide bugs. Defaults to False.
        init_weights (bool): Run the model's ``init_weights()`` (``Pretrained`` inits dropped)
            as the runner would. Needed where a parameter is uninitialised memory until then
            (DINO, Deformable DETR: ``level_embed``). Defaults to False: PyTorch's default
            initialisation of each layer, what the suite's random teachers were built with.

    Returns:
        str: ``path``.
    """
    registry = importlib.import_module(f'{scope}.registry').MODELS
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope(scope):
        # A copy: some detectors write into their config while building (DINO's bbox_head).
        model = registry.build(copy.deepcopy(model_cfg))
    if init_weights:
        init_weights_offline(model)
    if calibrate_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = None  # cumulative average
        model.train()
        with torch.no_grad():
            for _ in range(3):
                images = torch.randn(2, 3, 64, 64)
                model.extract_feat(images) if scope == 'mmdet' else model(images, mode='tensor')
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, str(path))
    return str(path)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a distributed test run's ``PORT`` (a fixed port can
    still be held by the previous run's socket, or by another test worker: EADDRINUSE)."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
