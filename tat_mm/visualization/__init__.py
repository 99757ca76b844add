"""Drawing helpers (DAM areas over images / feature maps) and the training-time figure hook."""
from .dam_vis import draw_dam_areas
from .distill_visualization_hook import DistillVisualizationHook

__all__ = ['draw_dam_areas', 'DistillVisualizationHook']
