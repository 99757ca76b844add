"""MMEngine hooks of tat_mm (registered in MMEngine's root HOOKS, visible from every scope)."""
from .demo_teacher_check_hook import DemoTeacherCheckHook
from .rng_state_hook import RNGStateHook

__all__ = ['DemoTeacherCheckHook', 'RNGStateHook']
