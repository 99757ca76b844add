"""How much each distillation term pulls on the student, compared with the student's own loss.

For a term ``L_d`` and the task loss ``L_task`` (the sum of the student's own loss terms), with
``g_d`` and ``g_task`` their gradients on the student's parameters (all of them, flattened into
one vector)::

    ratio  = |g_d| / |g_task|                       # 0.01: the term barely moves the student
    cosine = g_d . g_task / (|g_d| |g_task|)        # < 0: the term pulls against the task loss

Used during training by :class:`~tat_mm.engine.DistillHealthHook` and offline by
``tools/evidence.py``'s gradient statistics; both call :func:`gradient_shares`.
"""
from typing import Collection, Dict, List, Mapping, NamedTuple, Sequence, Union

import torch
import torch.nn as nn

LossValue = Union[torch.Tensor, Sequence[torch.Tensor]]

#: The key of the sum of all distillation terms in :func:`gradient_shares` (``combined=True``).
COMBINED = 'distill'


class GradientShare(NamedTuple):
    """One distillation term's gradient against the task loss's, on the student's parameters.

    Attributes:
        ratio (float): ``|g_term| / |g_task|`` (inf when the task gradient is zero).
        cosine (float): Cosine between ``g_term`` and ``g_task`` (nan when either is zero).
        norm (float): ``|g_term|``.
        task_norm (float): ``|g_task|``.
    """
    ratio: float
    cosine: float
    norm: float
    task_norm: float


def distill_loss_keys(distiller: nn.Module, losses: Mapping[str, LossValue]) -> List[str]:
    """The keys of ``losses`` (a distiller's ``loss()`` output) that are distillation terms.

    A distiller names every distillation term ``loss_<name>.<student tap>``; every other key
    holding ``'loss'`` is the student's own (task) loss.

    Args:
        distiller (nn.Module): A :class:`~tat_mm.distill.BaseDistiller` (its ``pairs``).
        losses (Mapping[str, Tensor | Sequence[Tensor]]): Its loss dict.

    Returns:
        List[str]: The distillation keys, in the order of ``losses``.
    """
    taps = {'.' + tap for tap in distiller.distill_term_taps}
    return [key for key in losses
            if key.startswith('loss_') and any(key.endswith(tap) for tap in taps)]


def student_parameters(distiller: nn.Module) -> List[torch.nn.Parameter]:
    """The student's trainable parameters (not those of the losses' own modules)."""
    return [p for p in distiller.student.parameters() if p.requires_grad]


def _total(value: LossValue) -> torch.Tensor:
    # MMEngine's parse_losses sums list-valued terms (mmdet's per-level losses) the same way.
    return value if isinstance(value, torch.Tensor) else sum(value)


def gradient_shares(losses: Mapping[str, LossValue],
                    distill_keys: Collection[str],
                    params: Sequence[torch.Tensor],
                    combined: bool = False) -> Dict[str, GradientShare]:
    """Gradient ratio and cosine of each distillation term against the task loss.

    The task loss is the sum of the terms of ``losses`` whose key contains ``'loss'`` (what
    MMEngine's ``parse_losses`` optimises) and that are not in ``distill_keys``. Gradients come
    from ``torch.autograd.grad`` with the graph kept, so a training step can still call
    ``backward()`` on the same losses afterwards; nothing is written into ``.grad``. A term
    without a gradient path to ``params`` (e.g. ``loss_dam_gt``, which trains DAM only) is left
    out of the result.

    Args:
        losses (Mapping[str, Tensor | Sequence[Tensor]]): Named loss terms of one forward pass
            (a distiller's ``loss()`` output), still attached to their graph.
        distill_keys (Collection[str]): The distillation terms among them
            (:func:`distill_loss_keys`).
        params (Sequence[Tensor]): The parameters the gradients are taken on, usually the
            student's (:func:`student_parameters`).
        combined (bool): Also return the sum of all distillation terms under
            :data:`COMBINED` (``'distill'``). Defaults to False.

    Returns:
        Dict[str, GradientShare]: By distillation key (and :data:`COMBINED`).
    """
    params = list(params)
    if not params:
        raise ValueError('gradient_shares: no parameters to take the gradients on (is the '
                         'student frozen?).')
    wanted = set(distill_keys)
    distill_keys = [key for key in losses if key in wanted]
    task_terms = [_total(v) for k, v in losses.items() if 'loss' in k and k not in distill_keys]
    if not task_terms:
        raise ValueError(f'gradient_shares: no task loss among {sorted(losses)} (every term '
                         'containing "loss" is a distillation term).')
    terms = {key: _total(losses[key]) for key in distill_keys}
    if combined and terms:
        terms[COMBINED] = sum(terms.values())
    task_grads = _grads(sum(task_terms), params)
    if task_grads is None:
        raise ValueError('gradient_shares: the task loss has no gradient on the given parameters.')
    task_norm = _norm(task_grads)
    shares = {}
    for key, term in terms.items():
        grads = _grads(term, params)
        if grads is None:
            continue
        dot = float(sum((g.double() * t.double()).sum() for g, t in zip(grads, task_grads)
                        if g is not None and t is not None))
        norm = _norm(grads)
        shares[key] = GradientShare(
            ratio=norm / task_norm if task_norm > 0 else float('inf'),
            cosine=dot / (norm * task_norm) if norm > 0 and task_norm > 0 else float('nan'),
            norm=norm, task_norm=task_norm)
    return shares


def _grads(loss: torch.Tensor, params: List[torch.Tensor]):
    """``d loss / d params`` (None for parameters it does not reach), or None when it reaches
    none of them."""
    if not loss.requires_grad:
        return None
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return None if all(g is None for g in grads) else grads


def _norm(grads) -> float:
    return float(sum(g.double().pow(2).sum() for g in grads if g is not None).sqrt())
