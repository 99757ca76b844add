"""tat_mm: Target-aware Transformer (TaT) and SoKD's DAM distillation for OpenMMLab.

``import tat_mm`` (or ``custom_imports=dict(imports=['tat_mm'])`` in a config) applies the stack
fixes in :mod:`tat_mm.compat` and registers every loss, module, dataset and distiller. Losses and
modules go to MMEngine's root ``MODELS`` (visible from every task scope); each task adapter and
dataset is registered in its own library's registry, and only if that library is installed.
"""
from . import compat
from .version import __version__

compat.apply_all()

from . import datasets, distill, engine, losses, models, modules, visualization  # noqa: E402,F401,E501

__all__ = ['__version__', 'compat', 'datasets', 'distill', 'losses', 'models', 'modules']
