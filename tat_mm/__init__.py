"""tat_mm: Target-aware Transformer (TaT) and SoKD's DAM distillation for OpenMMLab.

``import tat_mm`` (or ``custom_imports=dict(imports=['tat_mm'])`` in a config) checks the versions
of the stack (:func:`tat_mm.version.check_versions`: an error below what tat_mm needs, a warning
outside what it is tested with), applies the stack fixes in :mod:`tat_mm.compat` (among them the
``tat_mm::`` config scope) and registers every loss, module, dataset and distiller. Losses and
modules go to MMEngine's root ``MODELS`` (visible from every task scope); each task adapter and
dataset is registered in its own library's registry, and only if that library is installed.
Neither the demo's plotting (:mod:`tat_mm.demo`) nor the configs' pure-Python forms
(:mod:`tat_mm.configs`) are imported.
"""
from .version import __version__, check_versions

check_versions()

from . import compat  # noqa: E402

compat.apply_all()

from . import datasets, distill, engine, losses, models, modules, visualization  # noqa: E402,F401,E501

__all__ = ['__version__', 'compat', 'datasets', 'distill', 'losses', 'models', 'modules']
