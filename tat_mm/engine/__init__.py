"""MMEngine hooks of tat_mm (registered in MMEngine's root HOOKS, visible from every scope)."""
from .demo_teacher_check_hook import DemoTeacherCheckHook
from .rng_state_hook import RNGStateHook

__all__ = ['DemoTeacherCheckHook', 'RNGStateHook']
from .distill_health_hook import DistillHealthHook  # noqa: E402
from .gradient_shares import GradientShare, gradient_shares  # noqa: E402

__all__ += ['DistillHealthHook', 'GradientShare', 'gradient_shares']
