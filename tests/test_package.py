"""`import tat_mm` registers what it defines, needs only the task libraries that are installed,
leaves the demo out, and checks the versions of the stack."""
import subprocess
import sys

# Run in a fresh interpreter where mmdet and mmpretrain cannot be imported (as for a user who
# installed only mmseg).
ONLY_MMSEG = r'''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmdet', 'mmpretrain'):
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, Block())
import importlib.util
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split('.')[0] in ('mmdet', 'mmpretrain') else _find_spec(name, *a)
import tat_mm
from mmengine.registry import MODELS
from mmseg.registry import MODELS as SEG_MODELS
assert 'mmdet' not in sys.modules and 'mmpretrain' not in sys.modules, sorted(m for m in sys.modules if m.startswith('mm'))
# nor the demo's plotting nor the configs' pure-Python twins
assert not [m for m in sys.modules if m.startswith(('tat_mm.demo', 'tat_mm.configs'))]
assert SEG_MODELS.get('SegDistiller') is not None
for name in ('TaTLoss', 'PatchGroupTaTLoss', 'AnchorPointTaTLoss', 'KDLoss', 'FitNetLoss', 'DAMDistillLoss', 'DAM'):
    assert MODELS.get(name) is not None, name
print('ok')
'''


def test_import_with_only_mmseg():
    out = subprocess.run([sys.executable, '-c', ONLY_MMSEG], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-3000:]


def test_everything_registered_in_the_right_registries():
    import tat_mm
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.registry import MODELS
    from mmpretrain.registry import DATASETS as CLS_DATASETS
    from mmpretrain.registry import MODELS as CLS_MODELS
    from mmseg.registry import DATASETS as SEG_DATASETS
    from mmseg.registry import MODELS as SEG_MODELS
    assert tat_mm.__version__
    # losses and DAM in the root registry, so every task scope finds them
    for registry in (MODELS, SEG_MODELS, DET_MODELS, CLS_MODELS):
        assert registry.get('PatchGroupTaTLoss') is not None
        assert registry.get('DAM') is not None
    assert CLS_MODELS.get('ClsDistiller') and SEG_MODELS.get('SegDistiller') and DET_MODELS.get('DetDistiller')
    assert CLS_DATASETS.get('DigitsClassificationDataset') and SEG_DATASETS.get('DigitsSegDataset')


# ------------------------------------------------------------------------------ version checks
def _installed_but(**versions):
    """The real installed versions, with some replaced (``mmcv='2.2.0'``; None: not installed)."""
    from tat_mm.version import installed_version
    return lambda name: versions[name] if name in versions else installed_version(name)


def test_the_set_up_stack_passes_the_version_checks_silently():
    import warnings

    from tat_mm.version import check_versions
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert check_versions() == []


def test_an_mmcv_that_mmdet_refuses_is_an_import_error_naming_both_versions():
    """mmdet 3.3 and mmseg 1.2 assert mmcv < 2.2.0 at import (read from their own __init__.py)."""
    import pytest

    from tat_mm.version import check_versions
    with pytest.raises(ImportError) as info:
        check_versions(installed=_installed_but(mmcv='2.2.0'))
    message = str(info.value)
    assert 'mmcv 2.2.0 is installed' in message and '>= 2.0.0rc4, < 2.2.0' in message
    assert 'mmsegmentation 1.2.2' in message  # the first library that refuses it
    # with only mmpretrain (accepts mmcv < 2.4.0) it is fine
    check_versions(installed=_installed_but(mmcv='2.2.0', mmsegmentation=None, mmdet=None))


def test_too_old_torch_or_mmengine_is_an_error_saying_what_is_needed():
    import pytest

    from tat_mm.version import check_versions
    with pytest.raises(ImportError, match=r'needs torch >=2\.5, but torch 2\.4\.1\+cu121 is installed'):
        check_versions(installed=_installed_but(torch='2.4.1+cu121'))
    with pytest.raises(ImportError, match=r'needs mmengine >=0\.10\.0, but mmengine 0\.9\.1'):
        check_versions(installed=_installed_but(mmengine='0.9.1'))


def test_untested_versions_warn_naming_installed_and_tested():
    import pytest

    from tat_mm.version import UntestedVersionWarning, check_versions
    with pytest.warns(UntestedVersionWarning) as record:
        untested = check_versions(installed=_installed_but(torch='2.6.0', mmdet='3.2.0'))
    assert untested == ['torch 2.6.0 (tested: >=2.14,<2.15)', 'mmdet 3.2.0 (tested: >=3.3.0,<3.4)']
    assert 'torch 2.6.0 (tested: >=2.14,<2.15)' in str(record[0].message)


def test_import_tat_mm_checks_versions_before_the_task_libraries_import():
    """The check runs first: with an mmcv mmdet refuses, ``import tat_mm`` raises tat_mm's
    ImportError instead of mmdet's bare AssertionError (and imports no task library)."""
    code = r'''
import importlib.metadata, sys
real = importlib.metadata.version
importlib.metadata.version = lambda name: '2.2.0' if name == 'mmcv' else real(name)
try:
    import tat_mm
except ImportError as e:
    print('ImportError:', e)
print(sorted(m for m in ('mmdet', 'mmseg', 'mmpretrain') if m in sys.modules))
'''
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert 'ImportError: mmsegmentation 1.2.2 is installed and accepts only mmcv' in out.stdout, (
        out.stdout + out.stderr[-2000:])
    assert out.stdout.strip().endswith('[]')
