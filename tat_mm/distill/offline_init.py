"""Weights initialised as MMEngine's runner initialises them, without downloading anything.

A model built from its config is not initialised yet: the runner calls ``model.init_weights()``
later, in ``Runner.train()``. Until then some parameters hold whatever memory they were given:
Deformable DETR's and DINO's ``level_embed`` is ``nn.Parameter(torch.Tensor(levels, dims))``,
filled only by ``init_weights()`` (normal). A pass through such a model (the tap inspector, the
distiller's ``validate_taps`` check) then sees arbitrary values, sometimes NaN: DINO's Hungarian
matching failed with ``matrix contains invalid numeric entries`` now and then.

:func:`init_weights_offline` runs ``init_weights()`` with every ``Pretrained`` init dropped (the
shapes are what these passes need, not the pre-trained values); :func:`initialised_for_a_pass`
does so for one pass and then puts everything back, so that the runner's own initialisation
later is the one it would have been.
"""
import contextlib
import copy
from typing import Iterator

import torch
import torch.nn as nn


def _without_pretrained(init_cfg):
    """``init_cfg`` without its ``Pretrained`` entries (None when nothing is left)."""
    if isinstance(init_cfg, dict):
        return None if init_cfg.get('type') == 'Pretrained' else init_cfg
    if isinstance(init_cfg, (list, tuple)):
        kept = [cfg for cfg in init_cfg if _without_pretrained(cfg) is not None]
        return kept or None
    return init_cfg


def _base_modules(model: nn.Module) -> list:
    from mmengine.model import BaseModule
    return [m for m in model.modules() if isinstance(m, BaseModule)]


def init_weights_offline(model: nn.Module) -> nn.Module:
    """Initialise ``model`` with its own ``init_weights()``, ``Pretrained`` inits dropped.

    Args:
        model (nn.Module): A freshly built model (its weights are replaced).

    Returns:
        nn.Module: ``model``.
    """
    for module in _base_modules(model):
        module.init_cfg = _without_pretrained(module.init_cfg)
    if callable(getattr(model, 'init_weights', None)):
        # Without MMEngine's per-parameter report (one INFO record per parameter on the console,
        # or a block in the log file): this initialisation is not the run's.
        model._dump_init_info = lambda: None
        try:
            model.init_weights()
        finally:
            del model._dump_init_info
    return model


@contextlib.contextmanager
def initialised_for_a_pass(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``model`` is initialised (:func:`init_weights_offline`); afterwards its
    weights, buffers, init configs, init flags and the CPU RNG state are what they were.

    A model that is initialised already (``init_weights()`` has run, or it is not an MMEngine
    ``BaseModule``) is left as it is.

    Args:
        model (nn.Module): A built model that the runner may not have initialised yet.

    Yields:
        nn.Module: ``model``.
    """
    if getattr(model, '_is_init', True):
        yield model
        return
    state = copy.deepcopy(model.state_dict())
    modules = _base_modules(model)
    saved = [(m, m.init_cfg, m._is_init) for m in modules]
    rng = torch.get_rng_state()
    try:
        with torch.no_grad():
            init_weights_offline(model)
        yield model
    finally:
        model.load_state_dict(state)
        for module, init_cfg, is_init in saved:
            module.init_cfg = init_cfg
            module._is_init = is_init
        torch.set_rng_state(rng)
