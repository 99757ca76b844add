"""How a loss reports statistics of its last forward pass (for :class:`DistillHealthHook`).

A loss that has something to report besides its value (TaT: how peaked its attention is; DAM: how
much of the map its mask covers; DAFA: how spread its policy is) inherits
:class:`ReportsStatistics`. Recording is off by default and then costs nothing: ``forward``
computes no statistic and keeps nothing. A reader (``tat_mm.engine.DistillHealthHook``, on its
probe iterations only) switches it on with :func:`record_statistics`, runs the training step, reads
``last_statistics`` and switches it off again. The statistics are computed without gradient from
the tensors the loss computes anyway, so the loss value and its gradients are unchanged.
"""
from typing import Dict, List

import torch
import torch.nn as nn

#: The ``last_statistics`` key of a loss that returns one scalar (not a dict of terms).
SCALAR_TERM = 'loss'


class ReportsStatistics:
    """Mixin of a loss that can report statistics of its last forward pass.

    Attributes:
        record_statistics (bool): When True, ``forward`` stores ``last_statistics``. Defaults to
            False (nothing computed, nothing stored).
        last_statistics (Dict[str, Dict[str, torch.Tensor]]): ``{term: {name: 0-dim tensor}}``
            from the last forward pass made while recording. ``term`` is a key of the dict the
            loss returns (``'loss_tat_pg'``), or :data:`SCALAR_TERM` for a loss returning one
            scalar; ``name`` is the statistic (``'attn_max'``, ``'attn_entropy'``,
            ``'dam_area_student'``, ...). Tensors are detached and stay on the loss's device.
    """

    record_statistics: bool = False
    last_statistics: Dict[str, Dict[str, torch.Tensor]] = {}  # replaced, never mutated

    def _keep_statistics(self, statistics: Dict[str, Dict[str, torch.Tensor]]) -> None:
        """Store one forward pass's statistics (call only while recording)."""
        self.last_statistics = {term: {name: value.detach() for name, value in stats.items()}
                                for term, stats in statistics.items()}


def record_statistics(model: nn.Module, enabled: bool) -> List[nn.Module]:
    """Switch statistics recording on or off in every loss of ``model`` that reports any.

    Switching on also clears what an earlier pass left in ``last_statistics``.

    Args:
        model (nn.Module): A distiller (or any module holding losses).
        enabled (bool): Record (True) or not (False).

    Returns:
        List[nn.Module]: The losses switched.
    """
    losses = [m for m in model.modules() if isinstance(m, ReportsStatistics)]
    for loss in losses:
        loss.record_statistics = enabled
        if enabled:
            loss.last_statistics = {}
    return losses
