"""Tell the user, while a distiller trains, whether distillation is working."""
import time
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..distill.base_distiller import term_log_name
from ..losses.loss_statistics import SCALAR_TERM, ReportsStatistics, record_statistics
from .gradient_shares import distill_loss_keys, gradient_shares, student_parameters
from .teacher_check import chance_level, evaluate_teacher

TEACHER_CHECKS = ('error', 'warn')


@HOOKS.register_module()
class DistillHealthHook(Hook):
    """Check the teacher before training and watch, every ``interval`` iterations, what each
    distillation term does to the student; warn (once each) with what to change.

    1. **Teacher check** (before training): the teacher predicts on the student's val dataloader
       (all of it, or ``teacher_val_batches`` batches), fed exactly as in training, and the
       student's val evaluator scores it: ``teacher/<metric>`` in the log and the visualizer. A
       teacher at chance level (top-1 below 1.5 / classes, mIoU at or below that of the
       all-one-class prediction, detection mAP ~ 0; see
       :func:`~tat_mm.engine.teacher_check.chance_level`) stops the run with an error
       (``teacher_check='warn'``: a warning; False: no check). After the student's first
       validation, a student already above its teacher gets a warning.
    2. **Gradient shares** (every ``interval`` iterations): for each distillation term, its
       gradient on the student's parameters against the task loss's
       (:func:`~tat_mm.engine.gradient_shares.gradient_shares`): ``health/grad_ratio.<term>``
       and ``health/grad_cos.<term>``. They are taken from the training step's own graph
       (``torch.autograd.grad`` before its ``backward``): no extra forward pass, and the step,
       its random numbers and its result are exactly those of a run without this hook.
    3. **Method statistics** (same iterations), from the losses that report them
       (:mod:`tat_mm.losses.loss_statistics`): TaT ``attn_max`` / ``attn_entropy`` per term,
       DAM ``dam_area_student`` / ``dam_area_teacher`` / ``dam_area_overlap`` /
       ``dam_area_mask``, DAFA ``dafa_policy_entropy``; as ``health/<statistic>.<term>``.
    4. **Warnings**, each once, when a condition holds at ``patience`` checks in a row: a
       gradient ratio below ``min_grad_ratio`` or above ``max_grad_ratio``, a cosine below
       ``min_grad_cos``, a TaT attention max weight above ``max_attention``, a DAM mask outside
       ``dam_area_range``; and the task loss flat (relative change below ``flat_task_change``)
       while a distillation term fell by more than ``falling_distill_change``, both over the
       last ``patience`` intervals.

    ``<term>`` is the term's loss key without ``loss_`` (``tat.backbone.layer4``). Scalars go to
    ``runner.visualizer.add_scalars`` (every vis backend: ``LocalVisBackend``'s
    ``vis_data/scalars.json``, TensorBoard, W&B) with the iteration as step, and one block of
    text to the log. Only rank 0 computes and writes (under DDP its gradients are rank 0's
    batch); the teacher check runs on every rank (the evaluator gathers them).

    Config::

        custom_hooks = [dict(type='DistillHealthHook')]                    # the defaults
        custom_hooks = [dict(type='DistillHealthHook', interval=100, teacher_val_batches=50)]

    Args:
        interval (int): Iterations between two checks of gradients and statistics; 0 switches
            them off (the teacher check still runs). Defaults to 50.
        teacher_check (bool | str): True or ``'error'``: stop a run whose teacher is at chance
            level; ``'warn'``: only warn; False: do not run the teacher. Defaults to True.
        teacher_val_batches (int, optional): Val batches the teacher is scored on. Defaults to
            None (all of them).
        patience (int): Checks in a row a condition must hold before its warning. Defaults to 3.
        min_grad_ratio (float): Below it a term "does nothing". Defaults to 0.01.
        max_grad_ratio (float): Above it a term "dominates the task loss". Defaults to 10.0.
        min_grad_cos (float): Below it a term "fights the task loss". Defaults to -0.2.
        max_attention (float): TaT attention max weight above which matching is one-to-one.
            Defaults to 0.95.
        dam_area_range (Sequence[float]): (low, high) fractions of the map DAM's mask should
            cover. Defaults to (0.01, 0.99).
        flat_task_change (float): Relative change of the task loss below which it is flat.
            Defaults to 0.02.
        falling_distill_change (float): Relative fall of a distillation term above which it
            "falls". Defaults to 0.2.
    """

    priority = 'ABOVE_NORMAL'  # read the losses' statistics before other hooks run forwards

    def __init__(self,
                 interval: int = 50,
                 teacher_check: Union[bool, str] = True,
                 teacher_val_batches: Optional[int] = None,
                 patience: int = 3,
                 min_grad_ratio: float = 0.01,
                 max_grad_ratio: float = 10.0,
                 min_grad_cos: float = -0.2,
                 max_attention: float = 0.95,
                 dam_area_range: Sequence[float] = (0.01, 0.99),
                 flat_task_change: float = 0.02,
                 falling_distill_change: float = 0.2):
        for name, value, low in (('interval', interval, 0), ('patience', patience, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f'DistillHealthHook: {name} must be an integer >= {low}, got '
                                 f'{value!r}')
        if teacher_check is True:
            teacher_check = 'error'
        if teacher_check is not False and teacher_check not in TEACHER_CHECKS:
            raise ValueError("DistillHealthHook: teacher_check must be True / 'error', 'warn' or "
                             f'False, got {teacher_check!r}')
        if teacher_val_batches is not None and (not isinstance(teacher_val_batches, int)
                                                or teacher_val_batches < 1):
            raise ValueError('DistillHealthHook: teacher_val_batches must be None (all) or an '
                             f'integer >= 1, got {teacher_val_batches!r}')
        if len(dam_area_range) != 2 or not 0 <= dam_area_range[0] < dam_area_range[1] <= 1:
            raise ValueError('DistillHealthHook: dam_area_range must be (low, high) with '
                             f'0 <= low < high <= 1, got {dam_area_range!r}')
        self.interval = interval
        self.teacher_check = teacher_check
        self.teacher_val_batches = teacher_val_batches
        self.patience = patience
        self.min_grad_ratio = min_grad_ratio
        self.max_grad_ratio = max_grad_ratio
        self.min_grad_cos = min_grad_cos
        self.max_attention = max_attention
        self.dam_area_range = tuple(dam_area_range)
        self.flat_task_change = flat_task_change
        self.falling_distill_change = falling_distill_change
        self.teacher_metric: Optional[Tuple[str, float]] = None  # (key, teacher's value)
        self._compared_student = False
        self._probe: Optional[dict] = None
        self._streaks: Dict[tuple, int] = defaultdict(int)
        self._warned = set()
        self._loss_history: List[tuple] = []  # per check: (task mean, {term: mean})

    # ----------------------------------------------------------------- teacher check
    def before_train(self, runner) -> None:
        model = _unwrap(runner.model)
        if not hasattr(model, 'pairs') or not hasattr(model, 'teacher'):
            runner.logger.warning('DistillHealthHook: the model is not a distiller '
                                  f'({type(model).__name__}); nothing to check. Remove the hook '
                                  'from custom_hooks.')
            self.interval, self.teacher_check = 0, False
            return
        if self.teacher_check:
            self._check_teacher(runner, model)

    def _check_teacher(self, runner, model) -> None:
        val_loop = runner.val_loop
        if val_loop is None:
            runner.logger.warning('DistillHealthHook: no val_dataloader / val_evaluator, so the '
                                  'teacher cannot be scored. Set teacher_check=False to silence '
                                  'this.')
            return
        start = time.perf_counter()
        metrics, num_samples, label_counts = evaluate_teacher(
            model, val_loop.dataloader, val_loop.evaluator, self.teacher_val_batches)
        seconds = time.perf_counter() - start
        meta = val_loop.evaluator.dataset_meta or {}
        num_classes = len(meta.get('classes') or ()) or getattr(
            getattr(model.teacher, 'head', None), 'num_classes', None)
        chance = chance_level(metrics, num_classes, label_counts)
        scalars = {f'teacher/{k}': float(v) for k, v in metrics.items() if _is_number(v)}
        runner.visualizer.add_scalars(scalars, step=runner.iter)
        text = ', '.join(f'{k}: {v:.4g}' for k, v in scalars.items())
        where = (f'{num_samples} val samples' if self.teacher_val_batches is None else
                 f'{num_samples} val samples (teacher_val_batches={self.teacher_val_batches})')
        if chance is None:
            runner.logger.info(f'Teacher check on {where} in {seconds:.1f} s: {text}. No chance '
                               f'level is known for these metrics; only logged.')
            return
        self.teacher_metric = (chance.metric, float(metrics[chance.metric]))
        value = self.teacher_metric[1]
        runner.logger.info(f'Teacher check on {where} in {seconds:.1f} s: {text} (chance level '
                           f'of {chance.metric}: {chance.value:.4g}, {chance.meaning}).')
        if value > chance.value:
            return
        message = (f'Teacher check: the teacher scores {chance.metric} = {value:.4g} on {where}, '
                   f'at chance level ({chance.value:.4g}: {chance.meaning}). It is untrained or '
                   'loaded wrongly: check that model.teacher.checkpoint holds weights trained for '
                   'model.teacher.config (and this dataset: classes, normalisation), or set '
                   "DistillHealthHook(teacher_check='warn') to train on regardless.")
        if self.teacher_check == 'error':
            raise RuntimeError(message)
        runner.logger.warning(message)

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        if self.teacher_metric is None or self._compared_student or not metrics:
            return
        key, teacher_value = self.teacher_metric
        if key not in metrics:
            return
        self._compared_student = True
        student_value = float(metrics[key])
        if student_value > teacher_value:
            runner.logger.warning(
                f'Distillation health: at its first validation (iteration {runner.iter}) the '
                f'student already scores {key} = {student_value:.4g}, above its teacher '
                f'({teacher_value:.4g}). A teacher the student beats has little to teach and may '
                'hold it back: use a stronger teacher, or lower the distillation loss weights '
                'and compare with the student trained alone.')

    # ----------------------------------------------------------------- periodic checks
    def _due(self, runner) -> bool:
        return (self.interval > 0 and self.every_n_train_iters(runner, self.interval)
                and is_main_process())

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not self._due(runner):
            return
        model = _unwrap(runner.model)
        record_statistics(model, True)
        probe = dict(model=model, shares=None, loss_keys=None, error=None,
                     original=model.__dict__.get('parse_losses'))
        parse_losses = model.parse_losses

        def parse_losses_with_shares(losses):
            # The first call with a graph is the training step's (DAFA's search step calls it
            # again, at moved weights): take every term's gradient before backward frees it.
            if probe['shares'] is None and torch.is_grad_enabled():
                keys = distill_loss_keys(model, losses)
                probe['loss_keys'] = (keys, [k for k in losses if 'loss' in k and k not in keys])
                try:
                    probe['shares'] = gradient_shares(losses, keys, student_parameters(model))
                except ValueError as exc:
                    probe['shares'], probe['error'] = {}, str(exc)
            return parse_losses(losses)

        model.parse_losses = parse_losses_with_shares  # this iteration only
        self._probe = probe

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        probe, self._probe = self._probe, None
        if probe is None:
            return
        model = probe['model']
        if probe['original'] is None:
            del model.parse_losses
        else:
            model.parse_losses = probe['original']
        record_statistics(model, False)
        if probe['error']:
            self._warn_once(runner, ('shares', None), f'DistillHealthHook: no gradient shares: '
                            f'{probe["error"]}')
        scalars = {}
        for key, share in (probe['shares'] or {}).items():
            term = key[len('loss_'):]
            scalars[f'grad_ratio.{term}'] = share.ratio
            scalars[f'grad_cos.{term}'] = share.cosine
        scalars.update(self._method_statistics(model))
        if not scalars:
            return
        self._write(runner, scalars)
        self._check(runner, scalars)
        if probe['loss_keys'] is not None:
            self._check_plateau(runner, *probe['loss_keys'])

    @staticmethod
    def _method_statistics(model) -> Dict[str, float]:
        """``{'<statistic>.<term>': value}`` from every loss that reported statistics."""
        scalars = {}
        for pair in model.pairs:
            for name, loss in zip(pair.loss_names, pair.losses):
                if not isinstance(loss, ReportsStatistics):
                    continue
                for out_key, stats in loss.last_statistics.items():
                    term = f'{_term_name(name, out_key)}.{pair.student_tap}'
                    scalars.update({f'{stat}.{term}': float(v) for stat, v in stats.items()})
        return scalars

    def _write(self, runner, scalars: Dict[str, float]) -> None:
        step = runner.iter + 1
        runner.visualizer.add_scalars({f'health/{k}': v for k, v in scalars.items()}, step=step)
        by_term = defaultdict(list)
        for key, value in scalars.items():
            stat, term = key.split('.', 1)
            by_term[term].append(f'{stat} {value:.4g}')
        runner.logger.info(f'Distillation health at iteration {step}:\n' + '\n'.join(
            f'    {term}: {", ".join(values)}' for term, values in by_term.items()))

    # ----------------------------------------------------------------- warnings
    def _warn_once(self, runner, key: tuple, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            runner.logger.warning(message)

    def _streak(self, key: tuple, condition: bool) -> bool:
        """Count checks in a row with ``condition``; True when they reach ``patience``."""
        self._streaks[key] = self._streaks[key] + 1 if condition else 0
        return self._streaks[key] >= self.patience

    def _check(self, runner, scalars: Dict[str, float]) -> None:
        times = f'at {self.patience} checks in a row' if self.patience > 1 else 'at this check'
        low, high = self.dam_area_range
        for key, value in scalars.items():
            stat, term = key.split('.', 1)
            rules = []
            if stat == 'grad_ratio':
                rules = [
                    ('ratio_low', value < self.min_grad_ratio,
                     f'the gradient of {term} on the student is {value:.2%} of the task loss\'s '
                     f'({times}, below {self.min_grad_ratio:.0%}): it does nothing: raise its '
                     'loss_weight (or drop the term).'),
                    ('ratio_high', value > self.max_grad_ratio,
                     f'the gradient of {term} on the student is {value:.1f}x the task loss\'s '
                     f'({times}, above {self.max_grad_ratio:g}x): it dominates the task loss: '
                     'lower its loss_weight.')]
            elif stat == 'grad_cos':
                rules = [('cos', value < self.min_grad_cos,
                          f'the gradient of {term} has cosine {value:+.2f} with the task loss\'s '
                          f'({times}, below {self.min_grad_cos:+.2f}): it fights the task loss: '
                          'lower its loss_weight, and check the teacher (teacher/* in the log) and '
                          'the taps (tools/inspect_taps.py).')]
            elif stat == 'attn_max':
                rules = [('attention', value > self.max_attention,
                          f'the TaT attention of {term} puts {value:.2f} of each query\'s weight '
                          f'on one position ({times}, above {self.max_attention:g}): one-to-one '
                          'matching, not TaT\'s one-to-all reconstruction: try `temperature` '
                          '(e.g. 4 or 16) in its loss config.')]
            elif stat == 'dam_area_mask':
                rules = [
                    ('dam_small', value < low,
                     f'DAM\'s mask for {term} covers {value:.1%} of the map ({times}, below '
                     f'{low:.0%}): almost nothing is distilled. Raise topk, lower score_thr, or '
                     "use area_source='union'."),
                    ('dam_large', value > high,
                     f'DAM\'s mask for {term} covers {value:.1%} of the map ({times}, above '
                     f'{high:.0%}): DAM confines nothing. Lower topk or use a binary mask_mode; '
                     'check that loss_dam falls.')]
            for kind, condition, message in rules:
                if self._streak((kind, term), condition):
                    self._warn_once(runner, (kind, term), f'Distillation health: {message}')

    def _check_plateau(self, runner, distill_keys: List[str], task_keys: List[str]) -> None:
        """Task loss flat while a distillation term falls, over the last ``patience`` intervals
        (window means of the logged losses)."""
        hub = runner.message_hub

        def window_mean(key: str) -> Optional[float]:
            buffer = hub.log_scalars.get(f'train/{key}')
            return None if buffer is None else float(buffer.mean(self.interval))

        task = [window_mean(k) for k in task_keys]
        if not task or None in task:
            return
        terms = {k: window_mean(k) for k in distill_keys}
        self._loss_history.append((sum(task), terms))
        if len(self._loss_history) <= self.patience:
            return
        old_task, old_terms = self._loss_history[-1 - self.patience]
        new_task = self._loss_history[-1][0]
        if abs(new_task - old_task) > self.flat_task_change * abs(old_task):
            return
        iters = self.patience * self.interval
        for key, new in terms.items():
            old = old_terms.get(key)
            if new is None or old is None or not old > 0:
                continue
            if (old - new) > self.falling_distill_change * old:
                self._warn_once(
                    runner, ('plateau', key),
                    f'Distillation health: over the last {iters} iterations the task loss stayed '
                    f'flat ({old_task:.4g} -> {new_task:.4g}) while {key} fell '
                    f'({old:.4g} -> {new:.4g}): the student learns the distillation target, not '
                    'its task (the plateau of docs/evidence.md). Lower that term\'s loss_weight, '
                    'or try SGD / a higher learning rate for the student.')


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) or (hasattr(value, 'ndim') and value.ndim == 0)


def _term_name(loss_name: str, out_key: str) -> str:
    """The log name (without ``loss_`` and tap) of a loss's output ``out_key``: DistillPair's
    rule (:func:`~tat_mm.distill.base_distiller.term_log_name`); a scalar loss: its name."""
    return loss_name if out_key == SCALAR_TERM else term_log_name(loss_name, out_key)
