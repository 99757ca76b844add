"""Save the random states in checkpoints and restore them on resume (bit-identical resume)."""
import random
from typing import Callable, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Make a resumed run draw the same random numbers as an uninterrupted one.

    MMEngine's resume restores weights, optimizer, schedulers, the iteration and the *seed*, not
    the random states: after a resume, dropout masks, drop-path, random proposal sampling and data
    augmentation draw from the state the seed gave at start-up, not from where the interrupted run
    was. This hook writes torch's CPU (and CUDA), numpy's and Python's random states into every
    checkpoint (``checkpoint['rng_state']``: tensors, numbers and strings, weights-only safe) and
    puts them back at the point the interrupted run was at: before the first batch after the
    checkpoint is fetched (iteration-based loops: after MMEngine has skipped the batches already
    trained on; epoch-based loops: before the epoch's dataloader is iterated).

    Not restored: the states of dataloader worker processes (``num_workers > 0``) and of ranks
    other than 0 (only rank 0 writes checkpoints).

        custom_hooks = [dict(type='RNGStateHook')]
    """

    priority = 'VERY_HIGH'  # before any other hook of the resumed run draws numbers

    def __init__(self):
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        numpy_state = np.random.get_state()
        checkpoint['rng_state'] = dict(
            torch=torch.get_rng_state(),
            cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # ('MT19937', uint32 keys, pos, has_gauss, cached_gaussian): keys as a tensor, so the
            # checkpoint stays loadable weights-only.
            numpy=(numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)),
                   *numpy_state[2:]),
            python=random.getstate())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if 'rng_state' in checkpoint:
            self._pending = dict(checkpoint['rng_state'], iter=checkpoint['meta'].get('iter'))

    def before_train_epoch(self, runner) -> None:
        state, self._pending = self._pending, None
        # Only on resume (the run continues from the checkpoint), not on load_from.
        if state is None or runner.iter != state['iter']:
            return
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop):
            _restore(state)  # before this epoch's dataloader iterator draws its seed
        elif hasattr(loop, 'dataloader_iterator'):
            # MMEngine's IterBasedTrainLoop now skips `iter` batches, then fetches the next one.
            loop.dataloader_iterator = _RestoreAfter(loop.dataloader_iterator, runner.iter,
                                                     lambda: _restore(state))


class _RestoreAfter:
    """Iterator wrapper: calls ``restore`` once, right before the ``(skip + 1)``-th batch."""

    def __init__(self, iterator, skip: int, restore: Callable[[], None]):
        self._iterator, self._skip, self._restore = iterator, skip, restore

    def __iter__(self):
        return self

    def __next__(self):
        if self._skip == 0 and self._restore is not None:
            self._restore()
            self._restore = None
        self._skip -= 1
        return next(self._iterator)


def _restore(state: dict) -> None:
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    name, keys, *rest = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state['python'])
