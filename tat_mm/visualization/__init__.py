"""Drawing helpers (DAM areas, DAFA's policy) and the training-time figure hook."""
from .dafa_policy import draw_dafa_policy
from .dam_vis import draw_dam_areas
from .distill_visualization_hook import DistillVisualizationHook

__all__ = ['draw_dafa_policy', 'draw_dam_areas', 'DistillVisualizationHook']
