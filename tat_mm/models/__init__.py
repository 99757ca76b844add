"""One thin distiller per OpenMMLab task library, registered only when that library is installed."""
import importlib
import importlib.util

# adapter module -> the task library it needs
_ADAPTERS = {
    'cls_distiller': 'mmpretrain',
    'seg_distiller': 'mmseg',
    'det_distiller': 'mmdet',
    'cifar_backbones': 'mmpretrain',  # the small CIFAR nets of the TaT paper's Table 1
}

__all__ = []
for _module, _library in _ADAPTERS.items():
    if importlib.util.find_spec(_library) is not None:
        importlib.import_module(f'.{_module}', __name__)
