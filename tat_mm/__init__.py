"""tat_mm: Target-aware Transformer and SoKD distillation for OpenMMLab."""
from .version import __version__

__all__ = ['__version__']
