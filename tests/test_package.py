"""`import tat_mm` registers what it defines and needs only the task libraries that are installed."""
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
