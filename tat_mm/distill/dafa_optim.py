"""The two optimizers of DAFA's bi-level step, built by the runner from one ``optim_wrapper``.

Users keep their optimizer config and add two lines::

    optim_wrapper = dict(
        constructor='DAFAOptimWrapperConstructor',
        type='OptimWrapper', optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4),
        dafa=dict(optimizer=dict(type='Adam', lr=0.005, betas=(0.5, 0.999))))   # optional

Everything but ``dafa`` (``type``, ``optimizer``, ``clip_grad``, ``paramwise_cfg``, AMP options)
builds the ``model`` wrapper exactly as MMEngine's default constructor would, over every parameter
except the search parameters; ``dafa`` builds the wrapper of the search parameters (defaults:
Adam, lr 0.005, betas (0.5, 0.999) as the public SoKD code, no weight decay). The result is an
``OptimWrapperDict(model=..., dafa=...)``: the runner checkpoints and resumes both, and a single
``param_scheduler`` list applies to both (give ``param_scheduler=dict(model=[...], dafa=[])`` to
keep the search learning rate constant, as the shipped ``_dafa`` configs do).
"""
import copy
from typing import Optional

from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapperDict
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS

from .dafa_step import DAFADistributedDataParallel, search_modules

DEFAULT_DAFA_OPTIM_WRAPPER = dict(
    type='OptimWrapper', optimizer=dict(type='Adam', lr=0.005, betas=(0.5, 0.999), weight_decay=0))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DAFAOptimWrapperConstructor:
    """Build ``OptimWrapperDict(model=..., dafa=...)`` for a distiller with ``DAFADistillLoss``.

    Args:
        optim_wrapper_cfg (dict): The model's optim wrapper config plus an optional ``dafa``
            optim wrapper config (merged into :data:`DEFAULT_DAFA_OPTIM_WRAPPER`).
        paramwise_cfg (dict, optional): Paramwise options of the model's optimizer. Defaults
            to None.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        cfg = copy.deepcopy(dict(optim_wrapper_cfg))
        dafa = copy.deepcopy(DEFAULT_DAFA_OPTIM_WRAPPER)
        user_dafa = dict(cfg.pop('dafa', None) or {})
        dafa['optimizer'].update(user_dafa.pop('optimizer', {}))
        dafa.update(user_dafa)
        self.dafa_cfg = dafa
        self.model_constructor = DefaultOptimWrapperConstructor(cfg, paramwise_cfg)

    def __call__(self, model):
        if is_model_wrapper(model) and not isinstance(model, DAFADistributedDataParallel):
            raise ValueError(
                f'DAFA under {type(model).__name__}: its train_step would skip the bi-level search. '
                "Set model_wrapper_cfg=dict(type='DAFADistributedDataParallel') in the config.")
        inner = model.module if is_model_wrapper(model) else model
        search_params = [p for _, m in search_modules(inner) for p in m.parameters()]
        if not search_params:
            raise ValueError('DAFAOptimWrapperConstructor: the model has no DAFADistillLoss; '
                             'remove `constructor` (and `dafa`) from optim_wrapper.')
        model_ow = self.model_constructor(model)
        # The search parameters belong to the `dafa` optimizer only.
        search_ids = {id(p) for p in search_params}
        optimizer = model_ow.optimizer
        for group in optimizer.param_groups:
            group['params'] = [p for p in group['params'] if id(p) not in search_ids]
        optimizer.param_groups[:] = [g for g in optimizer.param_groups if g['params']]

        dafa_cfg = copy.deepcopy(self.dafa_cfg)
        optimizer_cfg = dafa_cfg.pop('optimizer')
        optimizer_cfg['params'] = search_params
        dafa_ow = OPTIM_WRAPPERS.build(dafa_cfg,
                                       default_args=dict(optimizer=OPTIMIZERS.build(optimizer_cfg)))
        return OptimWrapperDict(model=model_ow, dafa=dafa_ow)
