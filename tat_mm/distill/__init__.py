"""The task-agnostic distillation core: feature taps, teacher loading, the distiller."""
from .base_distiller import BaseDistiller, DistillPair
from .feature_tap import FeatureTap, TapGroup, get_submodule
from .teacher import build_teacher, load_checkpoint_strict, load_config, resolve_model_config
# DAFA's bi-level step, its DDP wrapper and its optimizer constructor (registers the last two).
from .dafa_optim import DAFAOptimWrapperConstructor  # noqa: E402
from .dafa_step import DAFADistributedDataParallel, dafa_train_step  # noqa: E402

__all__ = [
    'BaseDistiller', 'DistillPair', 'FeatureTap', 'TapGroup', 'get_submodule', 'build_teacher',
    'load_checkpoint_strict', 'load_config', 'resolve_model_config'
]
