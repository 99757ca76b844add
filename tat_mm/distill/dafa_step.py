"""DAFA's bi-level update (SoKD), as the distiller's ``train_step``: MMEngine-native.

With ``DAFADistillLoss`` in the model, ``BaseDistiller.train_step`` calls :func:`dafa_train_step`
with the runner's :class:`~mmengine.optim.OptimWrapperDict` (``model``: student + distillation
modules, ``dafa``: the search parameters; built by ``DAFAOptimWrapperConstructor``). On a search
iteration (the first ``search_iters``, every ``search_interval``-th) it runs, before the normal step
and on one sampled augmentation b (DARTS second order, as the public SoKD code):

1. the virtual step ``w' = w - xi * (mu * momentum_buffer + dL_train(w, b)/dw + wd * w)`` with the
   model optimizer's momentum and weight decay (xi = ``virtual_lr``, 0.01);
2. the loss of the virtual student *without* augmentation, ``L_val(w')`` (the whole training
   loss: task terms and every distillation term against the true teacher), and ``v = dL_val/dw'``;
3. the implicit gradient by finite differences, ``eps = r / ||v||``, ``w+- = w +- eps v``:
   ``f(b) = (L_dafa(w+, b) - L_dafa(w-, b)) / (2 eps)`` (L_dafa: the terms of the DAFA losses,
   the only ones that depend on the policy); the hypergradient is ``-xi * dE_b[f(b)]``: for the
   magnitudes the real gradient of f, for probabilities and selection logits RELAX applied to f
   with the learned control variate; then one Adam step of the ``dafa`` optimizer.

Then the normal step runs with the (updated) augmentation. Outside the search phase only the normal
step runs. Choices where the public code is unclear (README, "DAFA"): the public code applies
RELAX at w+ and at w- separately, where the control-variate terms cancel exactly in the difference
(they do not depend on w), so its control variate does nothing; we apply RELAX once to the scalar
f(b), which is the paper's "RELAX with a learned control variate" and is unbiased. The search
passes restore the student's BN statistics, so the normal step sees what it would without search.

Distributed: wrap with ``model_wrapper_cfg=dict(type='DAFADistributedDataParallel')``; the search
passes run on the inner model and all-reduce their gradients (so every rank takes the same search
step), the normal step goes through DDP as usual.

Mixed precision (``--amp``, MMEngine's ``AmpOptimWrapper`` as the ``model`` wrapper): the normal
step runs under the wrapper's autocast and loss scaler like any other train step; the search
passes run in float32, with autocast off and without the scaler, on purpose:

* the finite difference ``(L_dafa(w+) - L_dafa(w-)) / (2 eps)`` subtracts two losses at weights
  only ``2 fd_radius`` apart (0.02, along ``v / ||v||``), which agree in their leading digits:
  float16 keeps about three significant digits, so in float16 f(b) would be mostly rounding (and
  its RELAX estimate noise);
* the search differentiates with ``torch.autograd.grad``, not ``backward``, and writes the search
  gradients itself: a ``GradScaler`` scales ``backward`` and checks the optimizer's ``.grad`` only,
  so it would neither see these gradients nor know how to skip a virtual step;
* the virtual step ``w' = w - xi * g`` moves the float32 master weights, whose gradient must not
  have been scaled.

It costs float32 speed only on search iterations (the first ``search_iters``, every
``search_interval``-th); the ``dafa`` wrapper stays a plain ``OptimWrapper`` (float32 gradients set
here, nothing to unscale).
"""
import contextlib
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from mmengine.logging import MMLogger
from mmengine.model.wrappers import MMDistributedDataParallel
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import MODEL_WRAPPERS
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from ..losses.dafa_distill_loss import DAFADistillLoss
from ..modules.feature_augment_search import FeatureAugmentSearch

SCHEDULE_KEYS = ('search_iters', 'search_interval', 'virtual_lr', 'fd_radius')
OPTIM_HELP = ("optim_wrapper=dict(constructor='DAFAOptimWrapperConstructor', "
              "optimizer=dict(type='SGD', ...), dafa=dict(optimizer=dict(type='Adam', lr=0.005, "
              'betas=(0.5, 0.999))))')


def find_dafa_losses(model: torch.nn.Module) -> List[DAFADistillLoss]:
    """Every ``DAFADistillLoss`` in ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, DAFADistillLoss)]


def search_modules(model: torch.nn.Module) -> List[Tuple[str, FeatureAugmentSearch]]:
    """``(name, module)`` of every search module in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, FeatureAugmentSearch)]


def _check_schedules(searches: List[FeatureAugmentSearch]) -> FeatureAugmentSearch:
    first = searches[0]
    for other in searches[1:]:
        for key in SCHEDULE_KEYS:
            if getattr(other, key) != getattr(first, key):
                raise ValueError(f'All DAFADistillLoss searches of a model run in one bi-level step '
                                 f'and must share {key}: got {getattr(first, key)} and '
                                 f'{getattr(other, key)}.')
        if other.step != first.step:
            raise RuntimeError(f'DAFA searches disagree on the iteration ({first.step} vs '
                               f'{other.step}): was a checkpoint loaded only partly?')
    return first


def split_optim_wrapper(optim_wrapper, search_phase: bool) -> Tuple[OptimWrapper, Optional[OptimWrapper]]:
    """The (model, dafa) wrappers; a clear error when the search phase lacks the second one."""
    if isinstance(optim_wrapper, OptimWrapperDict):
        names = set(optim_wrapper.optim_wrappers)
        if 'model' not in names or (search_phase and 'dafa' not in names):
            raise ValueError(f"DAFA needs optimizers named 'model' and 'dafa', got {sorted(names)}: "
                             f'use {OPTIM_HELP}.')
        return optim_wrapper['model'], optim_wrapper.optim_wrappers.get('dafa')
    if search_phase:
        raise ValueError('DAFA search (search_iters > 0) needs a second optimizer for the search '
                         f'parameters, but the runner gave one optimizer. Use {OPTIM_HELP}.')
    return optim_wrapper, None


def _device_type(module: torch.nn.Module) -> str:
    """'cuda', 'cpu', ... of ``module``'s parameters (for ``torch.autocast``)."""
    return next(module.parameters()).device.type


def _all_reduce_mean(tensors: List[Tensor]) -> List[Tensor]:
    """Average tensors over processes (one call); unchanged without distributed training."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset:offset + t.numel()].view_as(t).to(t.dtype))
        offset += t.numel()
    return out


@contextlib.contextmanager
def _teacher_runs_once(distiller):
    """The teacher and its input are the same in every pass of a step: run it once."""
    cache = {}
    run_teacher = distiller._run_teacher

    def cached(inputs, data_samples):
        if not cache:
            cache.update(run_teacher(inputs, data_samples))
        return dict(cache)

    distiller._run_teacher = cached  # instance attribute, shadows the method for this step
    try:
        yield
    finally:
        del distiller._run_teacher


@contextlib.contextmanager
def _set_attrs(objects, **values):
    saved = [{k: getattr(o, k) for k in values} for o in objects]
    for o in objects:
        for k, v in values.items():
            setattr(o, k, v)
    try:
        yield
    finally:
        for o, s in zip(objects, saved):
            for k, v in s.items():
                setattr(o, k, v)


def _grads(loss: Tensor, params: List[Tensor]) -> List[Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _virtual_step(optimizer: torch.optim.Optimizer, params: List[Tensor], grads: List[Tensor],
                  virtual_lr: Optional[float]) -> None:
    """In place: ``p -= xi * (mu * momentum_buffer + g + wd * p)`` with each group's mu and wd."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g['params']}
    with torch.no_grad():
        for p, g in zip(params, grads):
            group = group_of[id(p)]
            lr = group['lr'] if virtual_lr is None else virtual_lr
            step = g + group.get('weight_decay', 0.0) * p
            buf = optimizer.state.get(p, {}).get('momentum_buffer')
            if buf is not None:
                step = step + group.get('momentum', 0.0) * buf
            p.sub_(lr * step)


def bilevel_search_step(distiller, data: dict, model_ow: OptimWrapper, dafa_ow: OptimWrapper,
                        dafa_losses: List[DAFADistillLoss]) -> Dict[str, Tensor]:
    """One DAFA search step on the current samples (see the module docstring).

    Returns:
        dict: Log entries ``dafa.val_loss``, ``dafa.objective`` (f), ``dafa.cv_variance``,
        ``dafa.hypergrad_norm``.
    """
    searches = [loss.search for loss in dafa_losses]
    first = searches[0]
    inputs, data_samples = data['inputs'], data['data_samples']
    params = [p for g in model_ow.optimizer.param_groups for p in g['params'] if p.requires_grad]
    xi = first.virtual_lr if first.virtual_lr is not None else model_ow.get_lr()['lr'][0]
    buffers = [b.detach().clone() for b in distiller.buffers()]
    originals = [p.detach().clone() for p in params]

    def total_loss() -> Tensor:
        return distiller.parse_losses(distiller.loss(inputs, data_samples))[0]

    # 1. Virtual step on the loss with the augmented teacher.
    grads = _all_reduce_mean(_grads(total_loss(), params))
    _virtual_step(model_ow.optimizer, params, grads, first.virtual_lr)
    # 2. Un-augmented loss of the virtual student.
    with _set_attrs(searches, augment=False):
        val_loss = total_loss()
        v = _all_reduce_mean(_grads(val_loss, params))
    v_norm = torch.sqrt(sum((g.float()**2).sum() for g in v))
    eps = first.fd_radius / (float(v_norm) + 1e-12)

    # 3. f(b) and its magnitude gradients at w + eps v and w - eps v. Only the DAFA terms depend on
    # the policy; the student is frozen in these passes, so no graph is built through it.
    magnitudes = [s.magnitudes for s in searches]

    def dafa_objective(sign: float) -> Tuple[Tensor, List[Tensor]]:
        with torch.no_grad():
            for p, p0, vi in zip(params, originals, v):
                p.copy_(p0 + sign * eps * vi)
        for loss in dafa_losses:
            loss.recorded = None
        total_loss()
        value = sum(loss.recorded for loss in dafa_losses)
        if value.requires_grad:
            mag_grads = _grads(value, magnitudes)
        else:  # the sample applies no operation with a magnitude
            mag_grads = [torch.zeros_like(m) for m in magnitudes]
        return value.detach(), mag_grads

    frozen = [p for p in params if p.requires_grad]
    try:
        with _set_attrs(dafa_losses, record=True), _set_attrs(searches, magnitude_grad=True):
            for p in frozen:
                p.requires_grad_(False)
            f_plus, g_plus = dafa_objective(+1.0)
            f_minus, g_minus = dafa_objective(-1.0)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        for loss in dafa_losses:
            loss.recorded = None
        with torch.no_grad():
            for p, p0 in zip(params, originals):
                p.copy_(p0)
            for b, b0 in zip(distiller.buffers(), buffers):
                b.copy_(b0)

    reduced = _all_reduce_mean([torch.stack([f_plus, f_minus])] + g_plus + g_minus)
    (f_plus, f_minus), g_plus, g_minus = reduced[0], reduced[1:1 + len(searches)], \
        reduced[1 + len(searches):]
    objective = (f_plus - f_minus) / (2 * eps)

    # Hypergradient -xi * dE_b[f(b)]; the control variate descends the estimator's variance.
    dafa_ow.zero_grad()
    # Log values on the device: no sync per search module (the logger reads them once).
    variance = torch.zeros((), device=objective.device)
    hyper_sq = torch.zeros((), device=objective.device)
    for search, gp, gm in zip(searches, g_plus, g_minus):
        relax = search.relax_gradients(objective)
        variance = variance + relax.pop('variance').float()
        hyper = dict(magnitudes=-xi * (gp - gm) / (2 * eps),
                     probabilities=-xi * relax.pop('probabilities'),
                     selection_logits=-xi * relax.pop('selection_logits'))
        hyper.update(relax)  # control_variate.* gradients
        for name, param in search.named_parameters():
            param.grad = hyper[name].to(param.dtype)
            if not name.startswith('control_variate'):
                hyper_sq = hyper_sq + hyper[name].float().pow(2).sum()
    dafa_ow.step()
    dafa_ow.zero_grad()
    for search in searches:
        search.clamp_()
    return {'dafa.val_loss': val_loss.detach(), 'dafa.objective': objective.detach(),
            'dafa.cv_variance': variance / len(searches), 'dafa.hypergrad_norm': hyper_sq.sqrt()}


def dafa_train_step(distiller, data, optim_wrapper, ddp: Optional[MMDistributedDataParallel] = None
                    ) -> Dict[str, Tensor]:
    """``train_step`` of a distiller with DAFA losses: search step when due, then normal step.

    Args:
        distiller (BaseDistiller): The (unwrapped) distiller.
        data (dict | tuple | list): The batch from the dataloader.
        optim_wrapper (OptimWrapperDict | OptimWrapper): ``model`` and ``dafa`` wrappers; a single
            wrapper is enough once the search phase is over (or with ``search_iters=0``).
        ddp (MMDistributedDataParallel, optional): The DDP wrapper the normal step runs through.

    Returns:
        dict: The log variables (every loss term, plus ``dafa.*`` on search steps).
    """
    dafa_losses = find_dafa_losses(distiller)
    searches = [loss.search for loss in dafa_losses]
    first = _check_schedules(searches)
    step = first.step
    model_ow, dafa_ow = split_optim_wrapper(optim_wrapper, step < first.search_iters)
    search_logs = {}
    for search in searches:
        search.sample(step)
    try:
        with _teacher_runs_once(distiller):
            data = distiller.data_preprocessor(data, True)
            if first.search_due(step):
                # float32 even inside an outer autocast (module docstring: Mixed precision)
                with torch.autocast(device_type=_device_type(distiller), enabled=False):
                    search_logs = bilevel_search_step(distiller, data, model_ow, dafa_ow,
                                                      dafa_losses)
            runner_model = distiller if ddp is None else ddp
            with model_ow.optim_context(runner_model):
                losses = runner_model._run_forward(data, mode='loss')
            parsed_loss, log_vars = distiller.parse_losses(losses)
            model_ow.update_params(parsed_loss)
    finally:
        for search in searches:
            search.current = None
    for search in searches:
        search.num_steps += 1
    if first.search_iters > 0 and first.step == first.search_iters:
        log_policies(distiller)
    log_vars.update(search_logs)
    return log_vars


def log_policies(distiller, top_k: int = 5) -> None:
    """Write every learnt policy (top sub-policies) to the current MMEngine logger."""
    logger = MMLogger.get_current_instance()
    for name, search in search_modules(distiller):
        logger.info(f'DAFA search finished after {search.step} iterations; learnt policy of '
                    f'{name}: {search.format_policy(top_k)}')


@MODEL_WRAPPERS.register_module()
class DAFADistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` whose ``train_step`` is DAFA's bi-level step.

    Use ``model_wrapper_cfg=dict(type='DAFADistributedDataParallel')`` for distributed training
    with ``DAFADistillLoss``. The search parameters stay out of DDP (their gradients are
    all-reduced by the search step; the normal step does not use them) and start equal on all
    ranks (broadcast from rank 0).
    """

    def __init__(self, module, **kwargs):
        ignored = []
        for prefix, search in search_modules(module):
            ignored += [f'{prefix}.{n}' for n, _ in search.named_parameters()]
            ignored += [f'{prefix}.{n}' for n, _ in search.named_buffers()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
        super().__init__(module=module, **kwargs)
        if dist.is_initialized() and dist.get_world_size() > 1:
            for _, search in search_modules(module):
                for tensor in list(search.parameters()) + list(search.buffers()):
                    dist.broadcast(tensor.data, src=0)

    def train_step(self, data, optim_wrapper):
        if not find_dafa_losses(self.module):
            return super().train_step(data, optim_wrapper)
        return dafa_train_step(self.module, data, optim_wrapper, ddp=self)
