"""Each fix in tat_mm.compat is needed (the test fails without it) and works."""
import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.runner import checkpoint as mmengine_checkpoint

import tat_mm.compat as compat


def _save_mmengine_like_checkpoint(path):
    # What Runner.save_checkpoint writes: numpy scalars and a MessageHub state in `meta`.
    hub = MessageHub.get_instance('tat_mm_test_compat')
    hub.update_scalar('train/loss', np.float64(0.5))
    meta = dict(epoch=1, iter=np.int64(10), seed=np.int32(0), message_hub=hub.state_dict())
    torch.save({'meta': meta, 'state_dict': {'w': torch.ones(2)}}, path)


def test_plain_torch_load_rejects_mmengine_checkpoints(tmp_path):
    """Why the fix exists: torch >= 2.6 loads weights only by default."""
    path = tmp_path / 'ckpt.pth'
    _save_mmengine_like_checkpoint(path)
    with pytest.raises(Exception, match='[Ww]eights only load failed'):
        torch.load(path, map_location='cpu')


def test_mmengine_loads_its_checkpoints_after_the_fix(tmp_path):
    path = tmp_path / 'ckpt.pth'
    _save_mmengine_like_checkpoint(path)
    assert compat.patch_mmengine_checkpoint_loading()
    safe_before = set(torch.serialization.get_safe_globals())
    ckpt = mmengine_checkpoint._load_checkpoint(str(path), map_location='cpu')
    assert int(ckpt['meta']['iter']) == 10
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))
    # Loaded weights-only: the allow-list is active during the load only; torch.load is untouched.
    assert set(torch.serialization.get_safe_globals()) == safe_before
    with pytest.raises(Exception, match='[Ww]eights only load failed'):
        torch.load(path, map_location='cpu')


def test_without_the_fix_mmengine_fails(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth'
    _save_mmengine_like_checkpoint(path)
    monkeypatch.setattr(mmengine_checkpoint, 'torch', torch)  # undo the fix for this test
    with pytest.raises(Exception, match='[Ww]eights only load failed'):
        mmengine_checkpoint._load_checkpoint(str(path), map_location='cpu')


def test_fix_is_applied_on_import_and_idempotent():
    import tat_mm  # noqa: F401
    from tat_mm import checkpoint_loading
    first = mmengine_checkpoint.torch
    assert getattr(first, compat._PATCHED_ATTR, False)
    assert mmengine_checkpoint.load_url is checkpoint_loading.load_url  # URLs too
    compat.apply_all()
    assert mmengine_checkpoint.torch is first
    # The stand-in forwards everything else to torch.
    assert mmengine_checkpoint.torch.save is torch.save


def test_cpu_distributed_init_uses_gloo_and_no_cuda(monkeypatch):
    from mmengine.dist import utils as dist_utils
    assert not torch.cuda.is_available()  # these tests run on CPU machines
    calls = []
    monkeypatch.setattr(torch.distributed, 'init_process_group', lambda **kw: calls.append(kw))
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '0')
    dist_utils._init_dist_pytorch('nccl')  # what a config's default dist_cfg asks for
    assert calls == [{'backend': 'gloo'}]
    # Without the fix, mmengine selects a CUDA device first and fails on a CPU machine.
    original = dist_utils._init_dist_pytorch.__wrapped__
    with pytest.raises(RuntimeError):
        original('gloo')


def test_ddp_wrapper_accepts_cpu_modules(monkeypatch):
    from mmengine.model.wrappers import distributed as mm_ddp
    seen = {}

    def fake_ddp_init(self, module, **kwargs):  # stands in for torch's DDP (needs a process group)
        seen.update(kwargs)

    monkeypatch.setattr(torch.nn.parallel.DistributedDataParallel, '__init__', fake_ddp_init)
    mm_ddp.MMDistributedDataParallel(module=torch.nn.Linear(2, 2), device_ids=[0],
                                     broadcast_buffers=False)
    assert 'device_ids' not in seen and seen['broadcast_buffers'] is False


def _mmengine_original_get_cfg_metainfo():
    """MMEngine's own ``_get_cfg_metainfo``, from a fresh copy of its module (the imported one
    is patched)."""
    import importlib.util
    from mmengine.config import utils as config_utils
    spec = importlib.util.spec_from_file_location('_fresh_mmengine_config_utils',
                                                  config_utils.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._get_cfg_metainfo


@pytest.mark.parametrize('package, zoo_config, base_config', [
    ('mmdet', 'retinanet/retinanet_r50_fpn_1x_coco.py', '_base_/models/retinanet_r50_fpn'),
    ('mmseg', 'deeplabv3plus/deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512.py',
     '_base_/models/deeplabv3plus_r50-d8'),
    ('mmpretrain', 'resnet/resnet18_8xb32_in1k.py', '_base_/models/resnet18'),
])
def test_metafiles_are_read_once_with_mmengine_answers(package, zoo_config, base_config,
                                                        monkeypatch):
    """Fix 5: the same entry as MMEngine's own lookup for a model-zoo config, the same ValueError
    for a base config (MMEngine then falls back to .mim/configs), every metafile read once."""
    import mmengine.fileio
    from mmengine.config import utils as config_utils
    from mmengine.utils import get_installed_path
    import tat_mm  # noqa: F401
    assert config_utils._get_cfg_metainfo is compat._cfg_metainfo_read_once
    original = _mmengine_original_get_cfg_metainfo()
    path = get_installed_path(package)
    expected = original(path, zoo_config)
    compat._metafile_configs.cache_clear()
    reads = []
    real_load = mmengine.fileio.load
    monkeypatch.setattr(mmengine.fileio, 'load', lambda file, *a, **k: reads.append(file) or
                        real_load(file, *a, **k))
    assert config_utils._get_cfg_metainfo(path, zoo_config) == expected
    assert expected['Config'].endswith(zoo_config)
    read_once = len(reads)
    assert read_once > 10 and len(set(reads)) == read_once  # model-index.yml + each metafile
    with pytest.raises(ValueError, match=f'but got {base_config}$'):
        config_utils._get_cfg_metainfo(path, base_config)
    with pytest.raises(ValueError, match=f'but got {base_config}$'):
        original(path, base_config)
    assert config_utils._get_cfg_metainfo(path, zoo_config) == expected
    assert len(reads) == read_once  # nothing read again
