"""Finding and checking distillation taps with one small forward pass.

Two users:

* ``tools/inspect_taps.py`` lists, for the student (run in ``loss`` mode, as the distiller trains
  it) and the teacher (run in the distiller's ``teacher_mode``), what every sub-module outputs:
  shape, channels, stride, and whether it ran, did not run, failed or was not reached; then pairs
  student and teacher modules of the same stride whose shapes can be distilled
  (:func:`inspect_model`, :func:`suggest_pairs`).
* ``BaseDistiller(validate_taps=True)`` calls :func:`validate_distill_taps` at build time: one
  tiny fake batch through the student and the teacher, then every distillation entry is checked
  against its losses, and every channel, size and patch-size problem is reported in one error,
  before the runner loads any data.

The fake batch is :func:`tat_mm.testing.fake_batch` (what the task's dataloader yields; with
masks for instance-segmentation models), put through the model's own data preprocessor, under
``no_grad``; the teacher runs in eval mode, the student's ``loss`` pass in train mode (as it
trains: DETR-family heads build their loss inputs only then) with its buffers (BN statistics)
restored afterwards: the check changes no weight and no BN statistic.
"""
import contextlib
import copy
import inspect
import math
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..testing import fake_batch
from .feature_tap import TapGroup
from .offline_init import init_weights_offline, initialised_for_a_pass

#: The fake-batch task of each task library's scope.
TASK_OF_SCOPE = {'mmpretrain': 'cls', 'mmseg': 'seg', 'mmdet': 'det'}

DEFAULT_INPUT_SIZE = (224, 224)

# Modules whose output repeats the layer before them: not worth listing as tap candidates.
_REPEATING_MODULES = ('torch.nn.modules.activation', 'torch.nn.modules.batchnorm',
                      'torch.nn.modules.normalization', 'torch.nn.modules.instancenorm',
                      'torch.nn.modules.dropout')


@dataclass
class TapCandidate:
    """What one module (or one element of its tuple output) produced in the inspection pass.

    Args:
        path (str): Module path as in ``named_modules()``.
        module_type (str): The module's class name.
        index (int, optional): Element of a tuple/list output (the distill entry's ``index``).
        shape (tuple): Output shape, batch first.
        calls (int): How often the module ran in the pass (a tap keeps the last call).
        input_size (tuple): (H, W) of the preprocessed input batch, for the stride.
        repeats_input (bool): A norm, activation, dropout or identity: its output repeats the
            layer before it, so it is not worth suggesting. Defaults to False.
    """
    path: str
    module_type: str
    index: Optional[int]
    shape: Tuple[int, ...]
    calls: int
    input_size: Tuple[int, int]
    repeats_input: bool = False

    @property
    def name(self) -> str:
        """str: ``path`` or ``path[index]``."""
        return self.path if self.index is None else f'{self.path}[{self.index}]'

    @property
    def kind(self) -> str:
        """str: 'map' (B, C, H, W), 'tokens' (B, N, C), 'vector' (B, C) or 'other'."""
        return {4: 'map', 3: 'tokens', 2: 'vector'}.get(len(self.shape), 'other')

    @property
    def channels(self) -> Optional[int]:
        """int: C of a map or a vector, the last dim of tokens."""
        if self.kind in ('map', 'vector'):
            return self.shape[1]
        return self.shape[-1] if self.kind == 'tokens' else None

    @property
    def grid(self) -> Optional[Tuple[int, int]]:
        """tuple: (h, w) of a map, or of the patch tokens (see :func:`token_grid`)."""
        if self.kind == 'map':
            return tuple(self.shape[-2:])
        if self.kind == 'tokens':
            found = token_grid(self.shape[1], self.input_size)
            return found[:2] if found else None
        return None

    @property
    def stride(self) -> Optional[float]:
        """float: Input height over feature height (None for vectors)."""
        grid = self.grid
        if grid is None:
            return None
        return self.input_size[0] / grid[0]

    def describe(self) -> str:
        """One line of the listing's 'output' column."""
        text = 'x'.join(str(s) for s in self.shape)
        if self.kind == 'tokens':
            found = token_grid(self.shape[1], self.input_size)
            if found:
                h, w, extra = found
                text += f' tokens = {extra} + {h}x{w}' if extra else f' tokens = {h}x{w}'
        return text


def token_grid(num_tokens: int, input_size: Tuple[int, int]) -> Optional[Tuple[int, int, int]]:
    """Guess the patch grid of ``num_tokens`` ViT tokens for an ``input_size`` image.

    Args:
        num_tokens (int): N of a (B, N, C) token tensor.
        input_size (tuple): (H, W) of the input batch.

    Returns:
        tuple | None: ``(h, w, extra)`` with ``h * w + extra == num_tokens`` for a square patch size
        that divides the input (``extra``: class / distillation / register tokens, at most 8), or
        None when nothing fits.
    """
    height, width = input_size
    for extra in range(0, 9):
        for patch in range(1, min(height, width) + 1):
            if height % patch or width % patch:
                continue
            if (height // patch) * (width // patch) == num_tokens - extra:
                return height // patch, width // patch, extra
    return None


def _tensors(value, index=None) -> List[Tuple[Optional[int], torch.Tensor]]:
    """The tensors of a module output: itself, or the elements of a tuple / list."""
    if isinstance(value, torch.Tensor):
        return [(None, value)]
    if isinstance(value, (tuple, list)):
        return [(i, v) for i, v in enumerate(value) if isinstance(v, torch.Tensor)]
    return []


@contextlib.contextmanager
def record_module_outputs(model: nn.Module, started: Optional[List[str]] = None):
    """Hook every sub-module of ``model`` and record the shapes of what it returns.

    Args:
        model (nn.Module): The model.
        started (list, optional): Filled with the path of every module whose call started, in
            order (with the outputs: which calls did not finish, when the pass failed).

    Yields:
        dict: ``{path: [module, {index: shape}, calls]}``, filled while the context is open.
    """
    records: Dict[str, list] = {}
    handles = []

    def hook(path):

        def record(module, args, output):
            entry = records.setdefault(path, [module, {}, 0])
            entry[1] = {i: tuple(t.shape) for i, t in _tensors(output)}
            entry[2] += 1

        return record

    for path, module in model.named_modules():
        if path:
            handles.append(module.register_forward_hook(hook(path)))
            if started is not None:
                handles.append(module.register_forward_pre_hook(
                    lambda module, args, path=path: started.append(path)))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def eval_no_grad(*models: nn.Module):
    """Run ``models`` in eval mode without grad, and restore their train/eval mode afterwards."""
    modes = [[(m, m.training) for m in model.modules()] for model in models]
    for model in models:
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for per_model in modes:
            for module, training in per_model:
                module.training = training


@contextlib.contextmanager
def train_no_grad(model: nn.Module):
    """Run ``model`` in train mode without grad; restore its modes and buffers afterwards.

    The student's ``loss`` pass needs train mode (DETR-family heads build their loss inputs only
    then); the buffers (BN running statistics) that pass updates are put back.
    """
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    model.train()
    try:
        with torch.no_grad():
            yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for module, training in modes:
            module.training = training


def is_instance_segmentation(model: nn.Module) -> bool:
    """Whether ``model`` is an mmdet detector that predicts masks (its loss needs gt masks)."""
    try:
        return bool(getattr(model, 'with_mask', False))
    except Exception:  # noqa: BLE001 - a property that fails means: no mask head
        return False


def fake_inputs(model: nn.Module, scope: str, input_size: Sequence[int],
                batch_size: int = 2) -> Tuple[torch.Tensor, list]:
    """A random batch put through ``model``'s own data preprocessor (test-time path).

    Args:
        model (nn.Module): A model of the task library (its ``data_preprocessor`` is used).
        scope (str): 'mmpretrain', 'mmseg' or 'mmdet'.
        input_size (Sequence[int]): (H, W) of the raw images.
        batch_size (int): Defaults to 2.

    Returns:
        tuple: ``(inputs, data_samples)`` as the model's ``forward`` takes them. The ground truth
        uses class 0 only, so it fits any number of classes.
    """
    if scope not in TASK_OF_SCOPE:
        raise ValueError(f'Cannot make a fake batch for scope {scope!r}; known: {sorted(TASK_OF_SCOPE)}.')
    batch = fake_batch(TASK_OF_SCOPE[scope], batch_size, tuple(input_size), num_classes=1,
                       with_masks=is_instance_segmentation(model))
    device = next(model.parameters()).device
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
    return data['inputs'].to(device), data['data_samples']


class Inspection(NamedTuple):
    """What one fake pass through a model showed (:func:`inspect_model`).

    Args:
        candidates (List[TapCandidate]): One per module output (and per element of tuple
            outputs), in the order they returned.
        not_run (List[str]): When the pass completed: modules whose forward hook did not fire,
            so a tap on them records nothing, even if their sub-modules ran.
        error (str, optional): The forward's error if it failed part-way, else None.
        failed (List[str]): Modules whose call started but did not finish (the failing module and
            its parents), outermost first; empty when the pass completed.
        not_reached (List[str]): When the pass failed: the modules whose hook did not fire and
            that are not part of the failure (not reached yet, or not called through their
            forward: unknown until the failure is fixed).
        mode (str): The mode the model ran in.
    """
    candidates: List[TapCandidate]
    not_run: List[str]
    error: Optional[str]
    failed: List[str]
    not_reached: List[str]
    mode: str


def inspect_model(model: nn.Module, scope: str, input_size: Sequence[int], mode: str,
                  batch_size: int = 2) -> Inspection:
    """Run ``model`` once in ``mode`` on a fake batch and describe every module's output.

    The ``loss`` pass runs in train mode (as the distiller trains the student; buffers restored),
    the others in eval mode; all without grad.

    Args:
        model (nn.Module): The student or the teacher.
        scope (str): Its task library's scope.
        input_size (Sequence[int]): (H, W) of the raw fake images.
        mode (str): 'loss' (how the distiller runs the student), or the teacher's mode ('tensor',
            'predict').
        batch_size (int): Defaults to 2.

    Returns:
        Inspection: The candidates and every module's status.
    """
    inputs, data_samples = fake_inputs(model, scope, input_size, batch_size)
    error = None
    started: List[str] = []
    context = train_no_grad(model) if mode == 'loss' else eval_no_grad(model)
    with context, record_module_outputs(model, started) as records:
        try:
            model(inputs, data_samples, mode=mode)
        except Exception as exc:  # noqa: BLE001 - reported; what ran before it is still listed
            error = f'{type(exc).__name__}: {exc}'
    size = tuple(inputs.shape[-2:])
    candidates = [
        TapCandidate(path, type(module).__name__, index, shape, calls, size, _repeats_input(module))
        for path, (module, shapes, calls) in records.items()
        for index, shape in shapes.items()
    ]
    # A module whose own hook did not fire may still have run through a method other than
    # __call__ (mmseg calls decode_head.loss(), which calls self.forward()): its sub-modules ran,
    # but a tap on it would record nothing. Both kinds are "not run" (untappable) when the pass
    # completed; after a failure, the modules not started yet are "not reached" (unknown).
    paths = [path for path, _ in model.named_modules() if path]
    failed = [] if error is None else list(dict.fromkeys(p for p in started if p not in records))
    missing = [p for p in paths if p not in records and p not in failed]
    if error is None:
        return Inspection(candidates, missing, None, [], [], mode)
    return Inspection(candidates, [], error, failed, missing, mode)


def _repeats_input(module: nn.Module) -> bool:
    # The class or a base of it (mmengine's SyncBatchNorm wraps torch's) is a norm, activation, ...
    return (any(cls.__module__ in _REPEATING_MODULES for cls in type(module).__mro__)
            or isinstance(module, nn.Identity))


def is_listed(candidate: TapCandidate, max_depth: int = 3) -> bool:
    """Whether the listing shows ``candidate``: at most ``max_depth`` path parts, no norm,
    activation or dropout (their output repeats the layer before)."""
    return candidate.path.count('.') + 1 <= max_depth and not candidate.repeats_input


def can_distill(student: TapCandidate, teacher: TapCandidate) -> bool:
    """Whether a distill entry can compare the two outputs: maps or tokens with the same batch
    size (RoI features of different RoI counts cannot be paired) and a known grid."""
    return (student.kind in ('map', 'tokens') and teacher.kind in ('map', 'tokens')
            and student.shape[0] == teacher.shape[0] and student.grid is not None
            and teacher.grid is not None)


def suggest_pairs(student: Sequence[TapCandidate], teacher: Sequence[TapCandidate],
                  max_depth: int = 2) -> List[Tuple[TapCandidate, TapCandidate]]:
    """Student-teacher tap pairs of the same stride whose shapes can be distilled.

    For each stride both models have: the modules with the same path in both (the usual case for
    two nets of one family), else the last module of that stride in each (the deepest feature at
    that resolution), at most ``max_depth`` path parts deep, or ``max_depth + 1`` for an output
    that returns after those and is not inside them (a transformer's layers,
    ``backbone.layers.11``, after ``backbone.patch_embed``; Swin's ``backbone.stages.2``). Maps
    and tokens (their grid guessed from the token count) are paired alike; only outputs of the same
    batch size (not RoI features of different RoI counts).

    Args:
        student (Sequence[TapCandidate]): The student's candidates (execution order).
        teacher (Sequence[TapCandidate]): The teacher's.
        max_depth (int): Defaults to 2.

    Returns:
        list: ``(student candidate, teacher candidate)`` pairs, by increasing stride.
    """

    def by_stride(candidates, depth):
        groups: Dict[float, List[TapCandidate]] = {}
        for c in candidates:
            # 1x1 maps (global pooling) have nothing for an attention over positions to match.
            if (c.kind in ('map', 'tokens') and c.stride and c.path.count('.') < depth
                    and not c.repeats_input and c.grid != (1, 1)):
                groups.setdefault(round(c.stride, 3), []).append(c)
        return groups

    def latest(shallow, deep):
        """The outputs of one stride to pair, latest last: the shallow ones, then a deeper one
        that returned after the last of them and is not inside it (a transformer's last layer
        after its patch embedding; not a ResNet stage's last block before the stage)."""
        if not shallow:
            return deep
        last = shallow[-1]
        later = [c for c in deep[deep.index(last) + 1:]
                 if not c.path.startswith(last.path + '.') and c not in shallow]
        return shallow + later[-1:]

    s_shallow, t_shallow = by_stride(student, max_depth), by_stride(teacher, max_depth)
    s_deep, t_deep = by_stride(student, max_depth + 1), by_stride(teacher, max_depth + 1)
    pairs = []
    for stride in sorted(set(s_deep) & set(t_deep)):
        s_list = latest(s_shallow.get(stride, []), s_deep[stride])
        t_list = latest(t_shallow.get(stride, []), t_deep[stride])
        t_by_name = {c.name: c for c in t_list}
        same = [(s, t_by_name[s.name]) for s in s_list
                if s.name in t_by_name and can_distill(s, t_by_name[s.name])]
        if same:
            pairs += same
            continue
        last = next(((s, t) for s in reversed(s_list) for t in reversed(t_list)
                     if can_distill(s, t)), None)
        if last is not None:
            pairs.append(last)
    return pairs


def format_stride(stride: Optional[float]) -> str:
    """'8' for an integer stride, '7.88' otherwise, '-' for none."""
    if stride is None:
        return '-'
    return str(int(round(stride))) if math.isclose(stride, round(stride), rel_tol=1e-3) else f'{stride:.2f}'


def entry_for_pair(student: TapCandidate, teacher: TapCandidate) -> str:
    """A distill entry for the pair, as a config line (a TaT loss with the right channels).

    Tuple elements become ``index`` (per side when they differ), transformer tokens ``tokens``
    (per side when only one side has them), different grids ``resize=True``.
    """
    options = ''
    if student.index == teacher.index:
        options += '' if student.index is None else f', index={student.index}'
    else:
        sides = ', '.join(f'{role}={c.index}' for role, c in (('student', student), ('teacher', teacher))
                          if c.index is not None)
        options += f', index=dict({sides})'
    token_sides = [role for role, c in (('student', student), ('teacher', teacher)) if c.kind == 'tokens']
    if len(token_sides) == 2:
        options += ', tokens=True'
    elif token_sides:
        options += f', tokens=dict({token_sides[0]}=True)'
    if student.grid != teacher.grid:
        options += ', resize=True'
    return (f"dict(student='{student.path}', teacher='{teacher.path}'{options}, losses=[dict("
            f"type='TaTLoss', student_channels={student.channels}, "
            f'teacher_channels={teacher.channels})])')


# ------------------------------------------------------------------------------- validation
@contextlib.contextmanager
def _capture(taps: TapGroup):
    """Collect ``{tap name: tensor}`` as the taps record, whatever happens to the values later."""
    captured: Dict[str, torch.Tensor] = {}
    previous = [tap.on_record for tap in taps.taps]

    def chained(tap, before):

        def on_record():
            captured[tap.name] = tap.value
            if before is not None:
                before()

        return on_record

    for tap, before in zip(taps.taps, previous):
        tap.on_record = chained(tap, before)
    try:
        yield captured
    finally:
        for tap, before in zip(taps.taps, previous):
            tap.on_record = before


def _shape(x: torch.Tensor) -> str:
    return 'x'.join(str(s) for s in x.shape)


def check_distill_taps(distiller, input_size: Optional[Sequence[int]] = None,
                       batch_size: int = 2) -> List[str]:
    """Every problem of ``distiller``'s distill entries, found with one fake batch.

    The student runs in ``loss`` mode and the teacher as the distiller runs it; then, for every
    distill entry: did both taps record, do the feature channels match each loss's
    ``student_channels`` / ``teacher_channels``, do the spatial sizes match (unless ``resize``),
    and does the entry's computation (the losses' own checks: patch and pool sizes, ranks, DAM)
    run. Nothing is trained and no state changes.

    Args:
        distiller (BaseDistiller): A built distiller.
        input_size (Sequence[int], optional): (H, W) of the fake images. Defaults to None: the
            student data preprocessor's ``size`` (mmseg) or 224 x 224.
        batch_size (int): Defaults to 2.

    Returns:
        list[str]: One message per problem; empty when every entry fits.
    """
    if input_size is None:
        input_size = getattr(distiller.data_preprocessor, 'size', None) or DEFAULT_INPUT_SIZE
    problems = []
    failed = {'student': False, 'teacher': False}
    # A student the runner has not initialised yet is initialised for this check only (DETR
    # family: uninitialised level embeddings); the runner's own initialisation is unchanged.
    with eval_no_grad(distiller, distiller.teacher), initialised_for_a_pass(distiller.student):
        inputs, data_samples = fake_inputs(distiller.student, distiller.scope, input_size, batch_size)
        with _capture(distiller.teacher_taps) as teacher_feats:
            try:
                distiller._run_teacher(inputs, data_samples)
            except Exception as exc:  # noqa: BLE001 - reported
                # A tap that recorded nothing is reported per entry below; anything else here.
                if 'recorded nothing' not in str(exc):
                    failed['teacher'] = True
                    problems.append(f'the teacher failed on a fake {_shape(inputs)} batch '
                                    f'({type(exc).__name__}: {exc}).')
        distiller.student_taps.clear()
        # The student's loss pass in train mode, as it trains (buffers restored afterwards).
        with _capture(distiller.student_taps) as student_feats, train_no_grad(distiller.student):
            try:
                distiller.student.loss(inputs, data_samples)
            except Exception as exc:  # noqa: BLE001 - reported
                failed['student'] = True
                problems.append(f'the student failed in loss mode on a fake {_shape(inputs)} batch '
                                f'({type(exc).__name__}: {exc}); taps after the failure are not '
                                'checked.')
        distiller.student_taps.clear()
        for pair in distiller.pairs:
            problems += _check_pair(distiller, pair, student_feats, teacher_feats, inputs,
                                    data_samples, failed)
    return problems


def _check_pair(distiller, pair, student_feats, teacher_feats, inputs, data_samples,
                failed: Dict[str, bool]) -> List[str]:
    """The problems of one distill pair (a multi-tap pair: of each of its taps, then its losses
    on the lists of features)."""
    where = f'distill entry student {pair.student_tap!r} -> teacher {pair.teacher_tap!r}'
    problems = []
    for role, feats, taps, mode in (('student', student_feats, pair.student_tap_names, 'loss'),
                                    ('teacher', teacher_feats, pair.teacher_tap_names,
                                     getattr(distiller, 'teacher_mode', 'tensor'))):
        for tap in taps:
            if tap in feats:
                continue
            if failed[role]:  # not reached before the failure: whether it runs is unknown
                problems.append(f'{where}: the {role} tap {tap!r} was not reached before the '
                                f'{role} failed (see above); fix that first.')
            else:
                problems.append(f'{where}: the {role} tap {tap!r} recorded nothing: the module '
                                f'does not run in {mode} mode. Tap a module that does '
                                '(tools/inspect_taps.py lists them).')
    if problems:
        return problems
    s_feats, t_feats = [], []
    for s_tap, t_tap in zip(pair.student_tap_names, pair.teacher_tap_names):
        s_feat, t_feat = student_feats[s_tap], teacher_feats[t_tap].float()
        if s_feat.dim() == 4 and t_feat.dim() == 4 and s_feat.shape[-2:] != t_feat.shape[-2:]:
            if not pair.resize:
                stride = [inputs.shape[-2] / f.shape[-2] for f in (s_feat, t_feat)]
                tap = f' (taps {s_tap!r} / {t_tap!r})' if pair.multi_tap else ''
                problems.append(
                    f'{where}: spatial sizes differ{tap} (student {_shape(s_feat)}, teacher '
                    f'{_shape(t_feat)}; strides {format_stride(stride[0])} and '
                    f'{format_stride(stride[1])}). Tap modules of the same stride, or set '
                    'resize=True in this entry.')
                continue
            s_feat = F.interpolate(s_feat, size=t_feat.shape[-2:], mode='bilinear',
                                   align_corners=False)
        s_feats.append(s_feat)
        t_feats.append(t_feat)
    if problems:
        return problems
    shapes = (f'student {", ".join(map(_shape, s_feats))}, teacher '
              f'{", ".join(map(_shape, t_feats))}')
    kwargs = distiller._loss_kwargs(s_feats[0], inputs, data_samples)
    for name, loss in zip(pair.loss_names, pair.losses):
        # Channel counts first, with the value to set; then the loss's own checks, by running it.
        wrong = []
        for role, feats in (('student', s_feats), ('teacher', t_feats)):
            configured = getattr(loss, f'{role}_channels', None)
            actual = [f.shape[1] if f.dim() == 4 else None for f in feats]
            if pair.multi_tap and isinstance(configured, (list, tuple)) and None not in actual \
                    and list(configured) != actual:
                wrong.append(f'{where}, loss {name!r}: {role}_channels={list(configured)} but the '
                             f'{role} taps give {actual} channels ({shapes}); set '
                             f'{role}_channels={actual}.')
            elif (not pair.multi_tap and isinstance(configured, int) and actual[0] is not None
                  and configured != actual[0]):
                wrong.append(f'{where}, loss {name!r}: {role}_channels={configured} but the {role} '
                             f'tap gives {actual[0]} channels ({shapes}); set '
                             f'{role}_channels={actual[0]}.')
        problems += wrong
        if wrong:
            continue
        accepted = inspect.signature(loss.forward).parameters
        args = (s_feats, t_feats) if pair.multi_tap else (s_feats[0], t_feats[0])
        try:
            loss(*args, **{k: v for k, v in kwargs.items() if k in accepted})
        except (ValueError, RuntimeError, TypeError) as exc:
            problems.append(f'{where}, loss {name!r}: {exc}')
    return problems


def validate_distill_taps(distiller, input_size: Optional[Sequence[int]] = None) -> None:
    """Raise one ``ValueError`` listing every problem :func:`check_distill_taps` finds.

    Args:
        distiller (BaseDistiller): A built distiller.
        input_size (Sequence[int], optional): See :func:`check_distill_taps`.
    """
    problems = check_distill_taps(distiller, input_size)
    if problems:
        lines = '\n'.join(f'  {i}. {p}' for i, p in enumerate(problems, 1))
        raise ValueError(f'validate_taps: {len(problems)} problem(s) in `distill` found with one '
                         f'fake batch:\n{lines}')


# ------------------------------------------------------------------------------- configs
# (H, W) or (W, H) order of the size argument of the pipeline transforms that fix the image size;
# mmcv's `scale` is (w, h), crops differ per library.
_SIZE_ARGS = {
    'Resize': ('scale', 'wh'), 'RandomResize': ('scale', 'wh'), 'RandomChoiceResize': ('scales', 'wh'),
    'RandomResizedCrop': ('scale', 'wh'), 'ResizeEdge': ('scale', 'wh'), 'CenterCrop': ('crop_size', 'wh'),
    'RandomCrop': ('crop_size', {'mmdet': 'wh'}),
}


def _as_hw(value, order: str) -> Optional[Tuple[int, int]]:
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        value = value[0]  # a list of scales: the first
    if isinstance(value, (int, float)) and value > 1:
        return int(value), int(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) and v > 1 for v in value):
        h, w = (value[1], value[0]) if order == 'wh' else (value[0], value[1])
        return int(h), int(w)
    return None  # relative sizes, ratios


def _train_pipeline(cfg) -> Tuple[list, str]:
    """The pipeline the runner trains with, and where it is: the train dataloader's dataset (through
    wrappers), else the config's ``train_pipeline`` variable (which a config may override in the
    dataloader without changing the variable)."""
    dataset = (cfg.get('train_dataloader') or {}).get('dataset') or {}
    while isinstance(dataset, dict) and 'pipeline' not in dataset:
        if isinstance(dataset.get('dataset'), dict):
            dataset = dataset['dataset']  # RepeatDataset, ClassBalancedDataset, ...
        elif dataset.get('datasets'):
            dataset = dataset['datasets'][0]  # ConcatDataset: its first dataset
        else:
            break
    if isinstance(dataset, dict) and dataset.get('pipeline'):
        return list(dataset['pipeline']), "the train dataloader's pipeline"
    if cfg.get('train_pipeline'):
        return list(cfg['train_pipeline']), 'the train pipeline'
    return [], ''


def input_size_from_config(cfg, scope: Optional[str] = None) -> Tuple[Tuple[int, int], str]:
    """The (H, W) of a training image, read from the config, and where it was read.

    The last size-fixing transform (crops, resizes) of the pipeline the runner trains with (the
    train dataloader's, else the config's ``train_pipeline``), else the data preprocessor's
    ``size``, else 224 x 224.

    Args:
        cfg (Config): A full config.
        scope (str, optional): The task library ('mmdet' crops are (w, h)). Defaults to None.

    Returns:
        tuple: ``((H, W), description)``.
    """
    found = None
    pipeline, where = _train_pipeline(cfg)
    for transform in pipeline:
        name = str(transform.get('type', '')).split('.')[-1]
        if name in _SIZE_ARGS:
            arg, order = _SIZE_ARGS[name]
            order = order.get(scope, 'hw') if isinstance(order, dict) else order
            size = _as_hw(transform.get(arg), order)
            if size:
                found = (size, f'{name}({arg}={transform.get(arg)}) in {where}')
    if found:
        return found
    model = cfg.get('model') or {}
    preprocessor = model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    if isinstance(model.get('student'), dict):
        preprocessor = model['student'].get('data_preprocessor') or preprocessor
    if preprocessor.get('size'):
        return tuple(preprocessor['size']), 'the data preprocessor size'
    return DEFAULT_INPUT_SIZE, 'the default (no size in the config)'


def build_config_models(cfg) -> dict:
    """Build the models of a config without loading any checkpoint, for inspection.

    Args:
        cfg (Config): A distiller config (student and teacher are built, the teacher from its
            config with random weights: its checkpoint need not exist) or a plain model config.
            Both are initialised as the runner would, without pre-trained downloads
            (:func:`~tat_mm.distill.offline_init.init_weights_offline`).

    Returns:
        dict: ``scope``, ``student`` (the model itself for a plain config), ``teacher`` (None for
        a plain config) and ``distiller_cls`` (None for a plain config).
    """
    import importlib

    from mmengine.registry import MODELS, DefaultScope

    from .base_distiller import BaseDistiller
    from .teacher import build_teacher_model, resolve_model_config

    model_cfg = copy.deepcopy(cfg['model'])
    default_scope = cfg.get('default_scope')
    if model_cfg.get('data_preprocessor') is None and cfg.get('data_preprocessor') is not None:
        model_cfg['data_preprocessor'] = cfg['data_preprocessor']  # as the runner does
    model_type = model_cfg['type']
    if isinstance(model_type, str):
        with MODELS.switch_scope_and_registry(default_scope) as registry:
            model_cls = registry.get(model_type)
        if model_cls is None:
            raise ValueError(f'Model type {model_type!r} is not registered in scope {default_scope!r}; '
                             'check the config\'s default_scope and custom_imports.')
    else:
        model_cls = model_type
    if not (isinstance(model_cls, type) and issubclass(model_cls, BaseDistiller)):
        scope = default_scope
        registry = importlib.import_module(f'{scope}.registry').MODELS
        model_cfg.pop('pretrained', None)
        with DefaultScope.overwrite_default_scope(scope):
            model = init_weights_offline(registry.build(model_cfg))
        return dict(scope=scope, student=model, teacher=None, distiller_cls=None)
    scope, registry = model_cls.scope, model_cls.registry
    student_cfg = resolve_model_config(model_cfg['student'])
    if model_cfg.get('data_preprocessor') is not None:
        student_cfg.setdefault('data_preprocessor', model_cfg['data_preprocessor'])
    with DefaultScope.overwrite_default_scope(scope):
        student = init_weights_offline(registry.build(student_cfg))
    teacher = init_weights_offline(build_teacher_model(dict(model_cfg['teacher']), registry, scope))
    return dict(scope=scope, student=student, teacher=teacher, distiller_cls=model_cls)
