"""Distillation losses: pure torch, registered in MMEngine's root ``MODELS``.

Every feature loss has the call signature ``loss(student_feat, teacher_feat, weight=None)`` where
``weight`` is an optional (B, 1, H, W) spatial weight map, and returns a scalar already multiplied
by its ``loss_weight``. Losses whose normalisation spans the whole map (CWD, AT) take no
``weight``; DKD also takes ``gt_label``; ReviewKD takes lists of features (a multi-tap entry).
"""
# Each line imports one loss file (importing registers it).
from .anchor_point_tat_loss import AnchorPointTaTLoss
from .fitnet_loss import FitNetLoss
from .kd_loss import KDLoss
from .patch_group_tat_loss import PatchGroupTaTLoss
from .tat_attention import build_tat_embedding, build_tat_embeddings, tat_attention
from .tat_loss import TaTLoss

__all__ = [
    'AnchorPointTaTLoss', 'FitNetLoss', 'KDLoss', 'PatchGroupTaTLoss', 'TaTLoss', 'build_tat_embedding',
    'build_tat_embeddings', 'tat_attention'
]
from .dam_distill_loss import DAMDistillLoss  # noqa: E402

__all__ += ['DAMDistillLoss']
# The baselines (issue 15): CWD, DKD, AT, ReviewKD (multi-tap), PKD, MGD.
from .at_loss import ATLoss  # noqa: E402
from .channel_wise_divergence_loss import ChannelWiseDivergenceLoss  # noqa: E402
from .dkd_loss import DKDLoss  # noqa: E402
from .mgd_loss import MGDLoss  # noqa: E402
from .pkd_loss import PKDLoss  # noqa: E402
from .review_kd_loss import ReviewKDLoss  # noqa: E402

__all__ += ['ATLoss', 'ChannelWiseDivergenceLoss', 'DKDLoss', 'MGDLoss', 'PKDLoss', 'ReviewKDLoss']
from .hierarchical_tat_loss import HierarchicalTaTLoss  # noqa: E402

__all__ += ['HierarchicalTaTLoss']
from .dafa_distill_loss import DAFADistillLoss  # noqa: E402

__all__ += ['DAFADistillLoss']
from .loss_statistics import ReportsStatistics, record_statistics  # noqa: E402

__all__ += ['ReportsStatistics', 'record_statistics']
# CrossKD's prediction-mimicking losses (DetDistiller's cross_head, issue 25).
from .distribution_kl_div_loss import DistributionKLDivLoss  # noqa: E402
from .kd_quality_focal_loss import KDQualityFocalLoss  # noqa: E402

__all__ += ['DistributionKLDivLoss', 'KDQualityFocalLoss']
# DIST (issue 25); logit standardization is an option of KDLoss / DKDLoss.
from .dist_loss import DISTLoss  # noqa: E402
from .logit_standardization import standardize_logits  # noqa: E402

__all__ += ['DISTLoss', 'standardize_logits']
