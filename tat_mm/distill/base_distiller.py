"""The task-agnostic distiller: student + frozen teacher + feature taps + distillation losses.

Data flows one way: ``loss`` mode runs the teacher (no grad, eval, stopped as soon as every teacher
tap has fired), then the student's own ``loss``; the taps' features go to the configured losses;
the result is one dict of named losses for the MMEngine runner. ``predict`` and ``tensor`` modes
are the student's, so upstream evaluators, test loops and inference code work unchanged.

The task adapters in ``tat_mm/models/`` only say which library builds the models.
"""
import contextlib
import copy
import difflib
import inspect
import re
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope, Registry

from .dafa_step import dafa_train_step, find_dafa_losses
from .feature_tap import (FeatureTap, TapGroup, TapsComplete, feature_layout_hint,
                          rank_mismatch_message)
from .preprocessing import build_teacher_preprocessing
from .student_checkpoint import load_plain_student_state
from .teacher import build_teacher, parse_teacher_dtype, resolve_model_config
from .teacher_mode import missing_samples_message, prepare_teacher, resolve_teacher_mode
from .token_to_map import split_tokens_option

# Short names used in log keys (``loss_<short>.<tap>``); other losses use their snake-cased type.
LOSS_SHORT_NAMES = {
    'TaTLoss': 'tat',
    'PatchGroupTaTLoss': 'tat_pg',
    'AnchorPointTaTLoss': 'tat_ap',
    'HierarchicalTaTLoss': 'tat',  # its terms loss_tat_pg / loss_tat_ap keep their names
    'KDLoss': 'kd',
    'FitNetLoss': 'fitnet',
    'DAMDistillLoss': 'dam',
    'DAFADistillLoss': 'dafa',
    'ChannelWiseDivergenceLoss': 'cwd',
    'DKDLoss': 'dkd',
    'ATLoss': 'at',
    'ReviewKDLoss': 'review_kd',
    'PKDLoss': 'pkd',
    'MGDLoss': 'mgd',
    'DISTLoss': 'dist',
}


def _short_name(loss_type) -> str:
    name = loss_type if isinstance(loss_type, str) else loss_type.__name__
    if name in LOSS_SHORT_NAMES:
        return LOSS_SHORT_NAMES[name]
    name = re.sub(r'Loss$', '', name)
    return re.sub(r'(?<!^)(?=[A-Z])', '_', name).lower()


def check_loss_weights(cfg: dict, where: str, path: str = '', loss_type: str = None) -> None:
    """Refuse a negative or non-finite weight in a loss config (also in nested loss configs).

    Checked: ``loss_weight`` and every other ``*_weight`` number (``dam_loss_weight``,
    ``patch_weight``, ...). A negative weight pushes the student *away* from the teacher, and
    NaN / inf poison the first step; zero (a term switched off) is allowed.

    Args:
        cfg (dict): A loss config.
        where (str): Where the config is, for the error (e.g. the distill entry).
        path (str): The keys leading to ``cfg`` inside the loss config. Defaults to ''.
        loss_type (str, optional): The outermost loss's type, for the error. Defaults to
            ``cfg['type']``.

    Raises:
        ValueError: A weight is negative, NaN, infinite, or (``loss_weight``) not a number.
    """
    import math
    import numbers
    if loss_type is None:
        loss_type = cfg.get('type', 'loss')
        loss_type = getattr(loss_type, '__name__', loss_type)  # a class as `type`
    for key, value in cfg.items():
        key_path = f'{path}{key}'
        if isinstance(value, dict):
            check_loss_weights(value, where, f'{key_path}.', loss_type)
            continue
        if not (key == 'loss_weight' or str(key).endswith('_weight')):
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        numbers_only = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
        if not numbers_only:
            if key == 'loss_weight':
                raise ValueError(f'{loss_type} in {where}: {key_path}={value!r} is not a number; '
                                 'set it to a number >= 0 (e.g. loss_weight=1.0).')
            continue
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError(
                f'{loss_type} in {where}: {key_path}={value!r}; a weight must be a finite number '
                '>= 0 (a negative weight pushes the student away from the teacher, NaN / inf '
                'break the first step). Set it to a value >= 0, e.g. the loss\'s default, or 0 '
                'to switch the term off.')


def build_loss(cfg: dict, where: str) -> nn.Module:
    """Build a loss from MMEngine's root registry (found from any task scope); an unknown type
    (also one nested, e.g. a ``feature_loss``) is an error naming close types and ``where``.
    Negative or non-finite weights are errors (:func:`check_loss_weights`)."""
    check_loss_weights(cfg, where)
    try:
        return ROOT_MODELS.build(cfg)
    except KeyError as exc:
        message = str(exc.args[0]) if exc.args else ''
        match = re.match(r"'?(\S+) is not in the \S+ registry", message)
        if match is None:
            raise
        unknown = match.group(1)
        names = {name.lower(): name for name in ROOT_MODELS.module_dict}
        close = [names[n] for n in difflib.get_close_matches(unknown.lower(), list(names), n=3,
                                                               cutoff=0.6)]
        losses = sorted(n for n in ROOT_MODELS.module_dict if n.endswith('Loss'))
        hint = f' Did you mean {" or ".join(close)}?' if close else ''
        raise KeyError(f'Unknown loss type {unknown!r} in {where}.{hint} Registered losses: '
                       f'{", ".join(losses)}.') from None


def rename_bare_loss(losses: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Log a student loss named just ``loss`` (mmpretrain's) as ``loss_cls``.

    MMEngine's ``parse_losses`` logs the sum of all terms as ``loss``; a term of that name would
    overwrite it in the logs, which would then leave out every distillation term. The renamed
    term is optimised exactly as before (``parse_losses`` sums every key containing ``loss``).
    """
    if 'loss' not in losses:
        return losses
    new_key = 'loss_cls' if 'loss_cls' not in losses else 'loss_student'
    return {(new_key if key == 'loss' else key): value for key, value in losses.items()}


def _index_per_side(entry: dict) -> tuple:
    """``(student index, teacher index)`` of a distill entry's ``index``.

    ``index`` is one value for both sides (None, an int, or a list of them), or
    ``dict(student=..., teacher=...)`` with one such value per side (a missing side: None), e.g.
    ``index=dict(student=None, teacher=3)`` pairs a student tensor with element 3 of a teacher
    tuple. Tuples become lists.
    """
    index = entry.get('index')
    where = f'Distill entry {entry.get("student")!r} -> {entry.get("teacher")!r}'
    if isinstance(index, dict):
        if not index or set(index) - {'student', 'teacher'}:
            raise ValueError(f'{where}: a per-side index is dict(student=..., teacher=...) (None, '
                             f'an int or a list of them per side); got index={index!r}.')
        sides = (index.get('student'), index.get('teacher'))
    else:
        sides = (index, index)
    sides = tuple(list(v) if isinstance(v, tuple) else v for v in sides)
    for role, value in zip(('student', 'teacher'), sides):
        for element in value if isinstance(value, list) else [value]:
            if element is not None and (isinstance(element, bool) or not isinstance(element, int)):
                raise ValueError(f'{where}: the {role} index {element!r} is not an int or None '
                                 f'(index={index!r}): an index picks one element of a tuple output.')
    return sides


def _index_list(index, count: int, entry: dict, kind: str) -> list:
    """``index`` (one side's) as a list of ``count`` elements: a single value is repeated."""
    if not isinstance(index, list):
        return [index] * count
    if len(index) != count:
        what = (f'one element (int or None) per tap ({count})' if kind == 'multi-tap' else
                f'as many indices on both sides ({count})')
        raise ValueError(f'{"Multi-tap distill" if kind == "multi-tap" else "Distill"} entry '
                         f'{entry.get("student")!r}: index={entry.get("index")!r} needs {what}.')
    return index


def _join_index(student_index, teacher_index):
    """The ``index`` value of an expanded entry: one value when both sides agree, else per side."""
    if student_index == teacher_index:
        return student_index
    return dict(student=student_index, teacher=teacher_index)


def term_log_name(loss_name: str, out_key: str) -> str:
    """The log name (without ``loss_`` and the tap) of the output ``out_key`` of a loss that
    returns a dict: DAM's ``{loss_feat, loss_dam, loss_dam_gt}`` -> ``dam_feat``, ``dam``,
    ``dam_gt`` (a key that already starts with the loss's name keeps it once).

    Args:
        loss_name (str): The loss's log name (``dam``, ``tat``, or the config's ``name``).
        out_key (str): A key of the dict the loss returned.
    """
    suffix = out_key[len('loss_'):] if out_key.startswith('loss_') else out_key
    return suffix if suffix.startswith(loss_name) else f'{loss_name}_{suffix}'


class DistillPair(nn.Module):
    """One student tap, one teacher tap and the losses computed between them.

    A *multi-tap* pair (``student`` and ``teacher`` lists of tap names, e.g. ReviewKD's stages)
    passes its losses the lists of features in that order; ``student_tap`` / ``teacher_tap`` are
    then the names joined by ``'+'`` (the log name), ``student_tap_names`` / ``teacher_tap_names``
    the lists.

    Args:
        student (str | List[str]): Student tap name (see :attr:`FeatureTap.name`), or a list.
        teacher (str | List[str]): Teacher tap name, or a list of the same length.
        losses (List[dict]): Loss configs; an optional ``name`` key sets the log name.
        resize (bool): Bilinearly resize the student feature to the teacher's spatial size when
            they differ (tap by tap). Defaults to False (a size mismatch is an error).
    """

    def __init__(self, student: Union[str, List[str]], teacher: Union[str, List[str]],
                 losses: List[dict], resize: bool = False):
        super().__init__()
        self.multi_tap = not isinstance(student, str)
        self.student_tap_names = list(student) if self.multi_tap else [student]
        self.teacher_tap_names = list(teacher) if self.multi_tap else [teacher]
        self.student_tap = '+'.join(self.student_tap_names)
        self.teacher_tap = '+'.join(self.teacher_tap_names)
        student, teacher = self.student_tap, self.teacher_tap
        self.resize = resize
        self.losses = nn.ModuleList()
        self.loss_names: List[str] = []
        for cfg in losses:
            cfg = copy.deepcopy(dict(cfg))
            name = cfg.pop('name', None) or _short_name(cfg.get('type', ''))
            if name in self.loss_names:
                raise ValueError(f'Two losses named {name!r} on tap {student!r}: give one of them a '
                                 'different `name` in its config.')
            self.loss_names.append(name)
            self.losses.append(build_loss(cfg, f'the distill entry {student!r} -> {teacher!r}'))
            # Losses taking lists of taps say so (``multi_tap = True``); a mix-up is a build error.
            if getattr(self.losses[-1], 'multi_tap', False) != self.multi_tap:
                raise ValueError(
                    f'Distill entry {student!r}: {type(self.losses[-1]).__name__} takes '
                    + ('one tap; this entry lists several (student / teacher lists are for losses '
                       'like ReviewKDLoss). Write one entry per tap (or index=[...] for elements of '
                       'one tuple output).' if self.multi_tap else
                       "several taps: list them in the entry, student=['backbone.layer1', ...], "
                       'teacher=[...].'))
        # The keyword arguments each loss takes (extra inputs such as boxes go only to those).
        self._loss_params = [set(inspect.signature(loss.forward).parameters) for loss in self.losses]

    def select(self, student_feats: Dict[str, torch.Tensor],
               teacher_feats: Dict[str, torch.Tensor]) -> tuple:
        """This pair's (student, teacher) features from ``{tap name: tensor}``: two tensors, or two
        lists for a multi-tap pair."""
        student = [student_feats[name] for name in self.student_tap_names]
        teacher = [teacher_feats[name] for name in self.teacher_tap_names]
        return (student, teacher) if self.multi_tap else (student[0], teacher[0])

    def _align(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor, student_tap: str,
               teacher_tap: str) -> tuple:
        """Detach the teacher (fp32), check ranks, resize the student if asked; one tap pair."""
        teacher_feat = teacher_feat.detach().float()
        if student_feat.dim() != teacher_feat.dim():
            raise ValueError(rank_mismatch_message(student_tap, student_feat, teacher_tap,
                                                   teacher_feat))
        if student_feat.dim() == 4 and student_feat.shape[-2:] != teacher_feat.shape[-2:]:
            if not self.resize:
                raise ValueError(
                    f'Distill pair student {student_tap!r} {tuple(student_feat.shape)} / teacher '
                    f'{teacher_tap!r} {tuple(teacher_feat.shape)}: spatial sizes differ. Tap '
                    'layers of the same stride, or set resize=True in this distill entry to resize '
                    'the student bilinearly.')
            student_feat = F.interpolate(student_feat, size=teacher_feat.shape[-2:], mode='bilinear',
                                         align_corners=False)
        return student_feat, teacher_feat

    def forward(self, student_feat: Union[torch.Tensor, List[torch.Tensor]],
                teacher_feat: Union[torch.Tensor, List[torch.Tensor]],
                **kwargs) -> Dict[str, torch.Tensor]:
        """Compute every loss of this pair; returns ``{log key: loss}``.

        A multi-tap pair takes (and passes its losses) lists of features, one per tap.
        """
        if not self.multi_tap:
            student_feat, teacher_feat = self._align(student_feat, teacher_feat, self.student_tap,
                                                     self.teacher_tap)
        else:
            aligned = [self._align(*args) for args in zip(student_feat, teacher_feat,
                                                          self.student_tap_names,
                                                          self.teacher_tap_names)]
            student_feat, teacher_feat = [s for s, _ in aligned], [t for _, t in aligned]
        results = {}
        for name, loss, accepted in zip(self.loss_names, self.losses, self._loss_params):
            extra = {k: v for k, v in kwargs.items() if k in accepted}
            try:
                value = loss(student_feat, teacher_feat, **extra)
            except ValueError as exc:
                raise ValueError(f'Distill pair student {self.student_tap!r} -> teacher '
                                 f'{self.teacher_tap!r}, loss {name!r}: {exc}'
                                 f'{"" if self.multi_tap else feature_layout_hint(student_feat)}'
                                 ) from exc
            if isinstance(value, dict):  # e.g. DAM: masked feature loss + DAM's own loss
                for key, term in value.items():
                    results[f'loss_{term_log_name(name, key)}.{self.student_tap}'] = term
            else:
                results[f'loss_{name}.{self.student_tap}'] = value
        return results


def _add_teacher_state(module: 'BaseDistiller', state_dict: dict, prefix: str, local_metadata):
    for key, value in module.teacher.state_dict().items():
        state_dict[f'{prefix}teacher.{key}'] = value
    return state_dict


class BaseDistiller(BaseModel):
    """Distil a frozen teacher into a student of the same OpenMMLab task library.

    Args:
        student (dict | str): The student: a model config dict of the task library, or a config
            path (local or ``'mmseg::...'``).
        teacher (dict): ``dict(config=..., checkpoint=...[, cfg_options=...])``. The config is a
            path (local or ``'mmseg::...'``) or a model dict; the checkpoint is loaded strictly.
        distill (List[dict]): Distillation entries, each
            ``dict(student=<module path>, teacher=<module path>, losses=[<loss cfg>, ...])`` with
            optional ``index`` (int or list of ints: pick tuple elements, e.g. FPN levels; a list
            makes one entry per index with its own loss modules; ``dict(student=..., teacher=...)``
            sets it per side, e.g. ``index=dict(student=None, teacher=3)`` for a student tensor
            and element 3 of a teacher tuple), ``use_input`` (tap the module's
            input instead of its output) and ``resize`` (bilinear student-to-teacher resizing).
            *Multi-tap* entry, for losses that take several taps at once (``ReviewKDLoss``):
            ``student`` and ``teacher`` are lists of module paths of equal length, e.g.
            ``student=['backbone.layer1', 'backbone.layer2'], teacher=[...]`` or, for several
            elements of one tuple output, ``student=['neck'] * 3, teacher=['neck'] * 3,
            index=[0, 1, 2]`` (``index``: one int or None per path, or one int for all; per side
            as ``dict(student=[...], teacher=[...])``). The
            entry's losses are called with lists of features in that order; the log key joins the
            student taps with ``'+'`` (``loss_review_kd.backbone.layer1+backbone.layer2``).
        teacher_dtype (str, optional): Run the teacher in 'float16' or 'bfloat16' to save memory
            and time. Defaults to None (float32).
        check_finite (bool): Raise ``FloatingPointError`` naming the term when a distillation loss
            is NaN or infinite (costs one device sync per step). Defaults to True.
        save_teacher (bool): Also write the teacher's weights into training checkpoints (as
            ``teacher.*``), making them self-contained; loading such a checkpoint restores them
            into the teacher. Defaults to False: the teacher is reloaded from its own file.
        data_preprocessor (dict, optional): The student's data preprocessor, used when the student
            config has none (the runner passes a config's top-level ``data_preprocessor`` here).
            The distiller always preprocesses with the student's; a teacher whose preprocessor
            differs (mean, std, channel order, padding) gets its own, re-made from the student's
            batch (:mod:`tat_mm.distill.preprocessing`). Defaults to None.
        validate_taps (bool | Sequence[int]): At build time, run one fake batch of this (H, W)
            size (True: the student data preprocessor's ``size``, else 224 x 224) through student
            and teacher and raise one error listing every channel, size and patch-size problem
            of ``distill``, before any data is loaded. Defaults to False.
        teacher_mode (str): How the teacher runs (under ``no_grad``, stopped after its last
            tap): 'tensor' (its plain forward), 'predict' (with the batch's data samples, for
            heads that need them: Mask2Former, MaskFormer), 'loss', or 'auto': 'predict' when a
            tapped module or a parent of it needs data samples in its ``forward``, else 'tensor'
            (:mod:`tat_mm.distill.teacher_mode`). Defaults to 'auto'.
        init_cfg (dict, optional): Defaults to None.
    """

    #: The task library's MODELS registry and scope; set by the task adapters.
    registry: Registry = ROOT_MODELS
    scope: Optional[str] = None

    def __init__(self,
                 student: Union[dict, str],
                 teacher: dict,
                 distill: Sequence[dict],
                 teacher_dtype: Optional[str] = None,
                 check_finite: bool = True,
                 save_teacher: bool = False,
                 data_preprocessor: Optional[dict] = None,
                 validate_taps: Union[bool, Sequence[int]] = False,
                 teacher_mode: str = 'auto',
                 init_cfg: Optional[dict] = None):
        student_cfg = resolve_model_config(student)
        if data_preprocessor is not None:
            # The runner passes a config's top-level `data_preprocessor` to the model it builds;
            # it belongs to the student, as it would to the plain model (which may default its type).
            student_cfg.setdefault('data_preprocessor', data_preprocessor)
        with DefaultScope.overwrite_default_scope(self.scope):
            student_model = self.registry.build(student_cfg)
        super().__init__(data_preprocessor=student_model.data_preprocessor, init_cfg=init_cfg)
        self.student = student_model
        self._check_student(self.student)
        # The teacher is kept outside the module tree: it is not in state_dict() (checkpoints hold
        # the student and the distillation modules only), not in parameters() (never in the
        # optimizer, never wrapped by DDP), and init_weights() never overwrites its loaded weights.
        self._teacher = [build_teacher(dict(teacher), self.registry, self.scope,
                                       student_cfg.get('data_preprocessor'))]
        self._check_student(self.teacher, 'teacher')
        # The teacher's own normalisation, re-made from the student's batch (None: the same).
        self.teacher_preprocessing = build_teacher_preprocessing(self.data_preprocessor,
                                                                 self.teacher.data_preprocessor)
        self._teacher_dtype = parse_teacher_dtype(teacher_dtype)
        if self._teacher_dtype is not None:
            self.teacher.to(self._teacher_dtype)
        self.check_finite = check_finite
        if save_teacher:
            self._register_state_dict_hook(_add_teacher_state)
        # Always accept `teacher.*` keys (a checkpoint written with save_teacher=True).
        self._register_load_state_dict_pre_hook(self._load_teacher_state)
        # A plain student checkpoint (`load_from` of a pretrained student) loads into the student.
        self.register_load_state_dict_pre_hook(load_plain_student_state)
        self.pairs = nn.ModuleList()
        student_taps, teacher_taps = {}, {}
        for entry in self._expand_entries(distill or []):
            # A multi-tap entry (lists of paths) taps every path; its pair gets the tap names.
            tap_entries = self._split_multi_tap(entry)
            s_tap = [self._get_tap(student_taps, self.student, e, 'student').name for e in tap_entries]
            t_tap = [self._get_tap(teacher_taps, self.teacher, e, 'teacher').name for e in tap_entries]
            if not entry.get('losses'):
                raise ValueError(f'Distill entry {entry["student"]!r} has no `losses`.')
            multi_tap = isinstance(entry['student'], list)
            self.pairs.append(
                DistillPair(s_tap if multi_tap else s_tap[0], t_tap if multi_tap else t_tap[0],
                            entry['losses'], entry.get('resize', False)))
        # Distillation that is not a tap pair (DetDistiller's cross_head) may add taps here.
        extra = self._build_extra_distillation(student_taps, teacher_taps)
        if not self.pairs and not extra:
            raise ValueError('`distill` is empty: a distiller without distillation entries would '
                             'silently train the plain student. Add at least one entry.')
        self.student_taps = TapGroup(student_taps.values())
        self.teacher_taps = TapGroup(teacher_taps.values(), stop_when_complete=True)
        #: str: The mode the teacher runs in ('tensor', 'predict' or 'loss'; 'auto' resolved).
        self.teacher_mode = resolve_teacher_mode(teacher_mode, self.teacher,
                                                 [tap.path for tap in self.teacher_taps.taps])
        prepare_teacher(self.teacher, self.teacher_mode)
        if validate_taps:
            from .tap_inspection import validate_distill_taps
            validate_distill_taps(self, None if validate_taps is True else tuple(validate_taps))

    # ----------------------------------------------------------------- building helpers
    @staticmethod
    def _expand_entries(distill: Sequence[dict]) -> List[dict]:
        entries = []
        for entry in distill:
            entry = dict(entry)
            unknown = set(entry) - {'student', 'teacher', 'losses', 'index', 'use_input', 'resize',
                                    'tokens'}
            if unknown or 'student' not in entry or 'teacher' not in entry:
                raise ValueError('Each distill entry is dict(student=<module path>, teacher=<module '
                                 'path>, losses=[...][, index, use_input, resize, tokens]); got keys '
                                 f'{sorted(entry)}.')
            if isinstance(entry['student'], (list, tuple)) or isinstance(entry['teacher'], (list, tuple)):
                entries.append(BaseDistiller._multi_tap_entry(entry))
                continue
            student_index, teacher_index = _index_per_side(entry)
            if isinstance(student_index, list) or isinstance(teacher_index, list):
                # One entry per index (per pair of indices), each with its own loss modules.
                count = len(student_index if isinstance(student_index, list) else teacher_index)
                student_index, teacher_index = (
                    _index_list(student_index, count, entry, 'index list'),
                    _index_list(teacher_index, count, entry, 'index list'))
                entries += [dict(entry, index=_join_index(s, t), losses=copy.deepcopy(entry['losses']))
                            for s, t in zip(student_index, teacher_index)]
            else:
                entries.append(dict(entry, index=_join_index(student_index, teacher_index)))
        return entries

    @staticmethod
    def _multi_tap_entry(entry: dict) -> dict:
        """Check a multi-tap entry and give it one ``index`` per tap (None: the whole output)."""
        student, teacher = entry['student'], entry['teacher']
        if not (isinstance(student, (list, tuple)) and isinstance(teacher, (list, tuple))
                and len(student) == len(teacher) and len(student) > 0):
            raise ValueError('A multi-tap distill entry lists as many student as teacher module '
                             "paths, e.g. student=['backbone.layer1', 'backbone.layer2'], teacher="
                             f"['backbone.layer1', 'backbone.layer2']; got student={student!r}, "
                             f'teacher={teacher!r}.')
        student_index, teacher_index = _index_per_side(entry)
        student_index = _index_list(student_index, len(student), entry, 'multi-tap')
        teacher_index = _index_list(teacher_index, len(student), entry, 'multi-tap')
        return dict(entry, student=list(student), teacher=list(teacher),
                    index=_join_index(student_index, teacher_index))

    @staticmethod
    def _split_multi_tap(entry: dict) -> List[dict]:
        """One single-tap entry per tap of a multi-tap entry; ``[entry]`` for a single-tap one."""
        if not isinstance(entry['student'], list):
            return [entry]
        student_index, teacher_index = _index_per_side(entry)
        return [dict(entry, student=s, teacher=t, index=_join_index(si, ti))
                for s, t, si, ti in zip(entry['student'], entry['teacher'], student_index,
                                        teacher_index)]

    @staticmethod
    def _get_tap(taps: dict, model: nn.Module, entry: dict, role: str) -> FeatureTap:
        tokens = split_tokens_option(entry.get('tokens'))[0 if role == 'student' else 1]
        index = _index_per_side(entry)[0 if role == 'student' else 1]
        key = (entry[role], index, entry.get('use_input', False), repr(tokens))
        if key not in taps:
            taps[key] = FeatureTap(model, entry[role], index, entry.get('use_input', False), role,
                                   tokens)
        return taps[key]

    def _build_extra_distillation(self, student_taps: dict, teacher_taps: dict) -> bool:
        """Subclasses build distillation that is not a tap pair here (e.g. DetDistiller's
        ``cross_head``), adding the taps it needs with :meth:`_get_tap`; returns whether any was
        built (a distiller with none and no ``distill`` entry is refused)."""
        return False

    def _extra_distill_losses(self, student_feats: Dict[str, torch.Tensor],
                              teacher_feats: Dict[str, torch.Tensor],
                              data_samples) -> Dict[str, torch.Tensor]:
        """The terms of :meth:`_build_extra_distillation`'s distillation for this step."""
        return {}

    @property
    def distill_term_taps(self) -> List[str]:
        """The student tap names that end the distillation terms' log keys
        (``loss_<name>.<tap>``): the pairs' and the extra distillation's."""
        return [pair.student_tap for pair in self.pairs]

    def _check_student(self, model: nn.Module, role: str = 'student') -> None:
        """Adapters check that ``model`` is a model of their task (clear error otherwise)."""

    # ----------------------------------------------------------------- teacher handling
    def _load_teacher_state(self, state_dict, prefix, *args):
        teacher_keys = [k for k in state_dict if k.startswith(prefix + 'teacher.')]
        if teacher_keys:
            teacher_state = {k[len(prefix + 'teacher.'):]: state_dict.pop(k) for k in teacher_keys}
            self.teacher.load_state_dict(teacher_state, strict=True)

    @property
    def teacher(self) -> nn.Module:
        """nn.Module: The frozen teacher (not a registered sub-module, see ``__init__``)."""
        return self._teacher[0]

    def _apply(self, fn, *args, **kwargs):
        # .to(device) / .cuda() / .cpu() must move the teacher too (it is outside the module tree).
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        if self._teacher_dtype is not None:  # a .float() on the distiller keeps the half teacher
            self.teacher.to(self._teacher_dtype)
        return self

    def train(self, mode: bool = True):
        """Set the student and distillation modules to ``mode``; the teacher always stays in eval."""
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def _run_teacher(self, inputs: torch.Tensor, data_samples) -> Dict[str, torch.Tensor]:
        self.teacher.eval()
        self.teacher_taps.clear()
        if self.teacher_preprocessing is not None:
            inputs = self.teacher_preprocessing(inputs, data_samples)
        # A teacher in teacher_dtype runs in exactly that dtype, autocast (AMP) off: under autocast
        # its convs would return the autocast dtype, which its own norm layers (in teacher_dtype)
        # refuse when the two differ ('mixed dtype'), e.g. bfloat16 teacher + float16 AMP.
        amp_off = contextlib.nullcontext()
        if self._teacher_dtype is not None:
            inputs = inputs.to(self._teacher_dtype)
            amp_off = torch.autocast(device_type=inputs.device.type, enabled=False)
        try:
            with amp_off:
                self.teacher(inputs, data_samples, mode=self.teacher_mode)
        except TapsComplete:  # every teacher feature recorded: skip the rest of the teacher
            pass
        except TypeError as exc:  # a head that needs data samples, called without them
            message = missing_samples_message(self.teacher, self.teacher_mode, exc)
            if message is None:
                raise
            raise TypeError(message) from exc
        return self.teacher_taps.pop_all()

    @torch.no_grad()
    def tapped_features(self, inputs: torch.Tensor, data_samples=None) -> tuple:
        """Student and teacher features of every tap for a preprocessed batch, without grad.

        For inspection (figures, benchmarks): ``({student tap: tensor}, {teacher tap: tensor})``.
        """
        teacher_feats = self._run_teacher(inputs, data_samples)
        self.student_taps.clear()
        self.student(inputs, data_samples, mode='tensor')
        return self.student_taps.pop_all(), teacher_feats

    # ----------------------------------------------------------------- forward
    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'tensor'):
        """Same contract as the student's ``forward``; ``loss`` mode adds distillation terms."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        try:
            return self.student(inputs, data_samples, mode=mode)
        finally:
            self.student_taps.clear()  # do not hold on to activations of predict/tensor passes

    def loss(self, inputs: torch.Tensor, data_samples) -> Dict[str, torch.Tensor]:
        """Student task losses plus every distillation loss, in one dict of named terms."""
        teacher_feats = self._run_teacher(inputs, data_samples)
        self.student_taps.clear()
        losses = rename_bare_loss(dict(self.student.loss(inputs, data_samples)))
        student_feats = self.student_taps.pop_all()
        distill_losses = {}
        for pair in self.pairs:
            student_feat, teacher_feat = pair.select(student_feats, teacher_feats)
            # A multi-tap pair's extra inputs (e.g. boxes scaled to a map) refer to its first tap.
            first_feat = student_feat[0] if pair.multi_tap else student_feat
            terms = pair(student_feat, teacher_feat,
                         **self._loss_kwargs(first_feat, inputs, data_samples))
            overlap = set(terms) & (set(distill_losses) | set(losses))
            if overlap:
                raise ValueError(f'Loss keys {sorted(overlap)} are produced twice: give the '
                                 'distillation loss another `name` in its config.')
            distill_losses.update(terms)
        extra = self._extra_distill_losses(student_feats, teacher_feats, data_samples)
        overlap = set(extra) & (set(distill_losses) | set(losses))
        if overlap:
            raise ValueError(f'Loss keys {sorted(overlap)} are produced twice: give the '
                             'distillation loss another `name` in its config.')
        distill_losses.update(extra)
        if self.check_finite:
            self._check_finite(distill_losses)
        losses.update(distill_losses)
        return losses

    def _check_finite(self, terms: Dict[str, torch.Tensor]) -> None:
        """Raise ``FloatingPointError`` naming each non-finite distillation term, and saying why.

        One device sync for all terms. Only when a term is not finite, the message looks further:
        whether the step ran under autocast (AMP) and whether the weights themselves are finite.
        Non-finite float32 weights mean the value is NaN in float32 too (the run diverged; AMP is
        not the cause). Finite weights under float16 autocast mean the float16 forward overflowed
        (65504 is float16's largest value): the loss scaler does not catch that. Its normal event
        is a step whose *gradients* overflow, which it skips while lowering the scale; that happens
        after this check and never reaches it (this checks the forward values only).

        Args:
            terms (Dict[str, torch.Tensor]): The distillation terms of this step, by log key.
        """
        values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        if bool(torch.isfinite(values).all()):
            return
        bad = ', '.join(f'{k} is {v.item()}' for k, v in zip(terms, values) if not torch.isfinite(v))
        device_type = values.device.type
        amp_dtype = (torch.get_autocast_dtype(device_type)
                     if torch.is_autocast_enabled(device_type) else None)

        def non_finite(module: nn.Module) -> List[str]:
            tensors = list(module.named_parameters()) + list(module.named_buffers())
            return [name for name, t in tensors
                    if t.is_floating_point() and not bool(torch.isfinite(t).all())]

        broken, broken_teacher = non_finite(self), non_finite(self.teacher)
        if broken:
            why = (f'The weights are not finite themselves ({", ".join(broken[:3])}'
                   f'{", ..." if len(broken) > 3 else ""}), so the value is NaN in float32 too: the '
                   'run diverged (not an AMP event). Lower the learning rate or the loss_weight, '
                   'or resume from an earlier checkpoint.')
        elif broken_teacher:
            why = (f'The teacher\'s weights in {next(self.teacher.parameters()).dtype} are not '
                   f'finite ({", ".join(broken_teacher[:3])}): its checkpoint holds values beyond '
                   "that dtype's range (float16 ends at 65504). Use teacher_dtype='bfloat16' or "
                   'None.')
        elif amp_dtype == torch.float16:
            why = ('Every weight is finite, so this is a float16 overflow in this step\'s forward '
                   'pass under autocast (AMP): float32 would not overflow here. The loss scaler '
                   'does not catch it (it only skips steps whose gradients overflow, lowering its '
                   "scale: the normal AMP event). Use AmpOptimWrapper's dtype='bfloat16' (the "
                   'range of float32) where the GPU has it, lower the loss_weight, or train in '
                   'float32.')
        else:
            precision = ('float32' if amp_dtype is None else
                         f'{str(amp_dtype).replace("torch.", "")} autocast (float32\'s range)')
            why = (f'Every weight is finite and the step ran in {precision}, so the value is NaN '
                   'in float32 too: lower its loss_weight or the learning rate, or check the '
                   'teacher checkpoint.')
        raise FloatingPointError(f'Distillation loss {bad}. {why} (Set check_finite=False to '
                                 'train on regardless.)')

    def _loss_kwargs(self, student_feat: torch.Tensor, inputs: torch.Tensor, data_samples) -> dict:
        """Extra keyword arguments for the losses that accept them (detection passes boxes).

        Args:
            student_feat (torch.Tensor): The student feature of the pair, (B, C, h, w) (the
                first one for a multi-tap pair).
            inputs (torch.Tensor): The preprocessed batch, (B, 3, H, W).
            data_samples (list): The batch's data samples.
        """
        return {}

    def train_step(self, data, optim_wrapper) -> Dict[str, torch.Tensor]:
        """MMEngine's train step; with ``DAFADistillLoss`` terms, DAFA's bi-level step.

        See :mod:`tat_mm.distill.dafa_step`: ``optim_wrapper`` is then an ``OptimWrapperDict``
        with the ``model`` and ``dafa`` optimizers (``DAFAOptimWrapperConstructor``).
        """
        if not find_dafa_losses(self):
            return super().train_step(data, optim_wrapper)
        return dafa_train_step(self, data, optim_wrapper)

    def predict(self, inputs: torch.Tensor, data_samples=None):
        """The student's predictions."""
        return self.forward(inputs, data_samples, mode='predict')
