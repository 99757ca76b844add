"""Drawing helpers (DAM areas over images / feature maps)."""
from .dam_vis import draw_dam_areas

__all__ = ['draw_dam_areas']
