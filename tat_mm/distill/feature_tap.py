"""Feature taps: record what a sub-module of a model produced, addressed by its module path."""
import difflib
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .token_to_map import TokensToMap


def get_submodule(model: nn.Module, path: str, model_name: str = 'model') -> nn.Module:
    """Return ``model``'s sub-module at ``path``, or raise a ``ValueError`` with close names.

    Args:
        model (nn.Module): The model to search.
        path (str): Dotted module path as in ``model.named_modules()``, e.g.
            ``'decode_head.bottleneck'``.
        model_name (str): How to call the model in the error message. Defaults to 'model'.

    Returns:
        nn.Module: The sub-module.
    """
    names = [name for name, _ in model.named_modules() if name]
    if path in names:
        return model.get_submodule(path)
    close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
    # Also offer the children of the deepest existing parent: the usual typo is in the last part.
    parent = path
    while parent and parent not in names:
        parent = parent.rpartition('.')[0]
    children = [n for n in names if n.startswith(parent + '.') and n.count('.') == parent.count('.') + 1
                ] if parent else [n for n in names if '.' not in n]
    hint = f' Did you mean one of: {", ".join(close)}?' if close else ''
    raise ValueError(f'The {model_name} ({type(model).__name__}) has no module {path!r}.{hint} '
                     f'Modules under {parent or "the root"!r}: {", ".join(children[:20])}')


class TapsComplete(Exception):
    """Raised by a tap to stop a forward pass once every needed feature has been recorded."""


class FeatureTap:
    """Records the output (or input) of one sub-module on every forward pass.

    Tap modules that run once per forward pass (a backbone stage, the FPN neck with ``index``, a
    decode head layer). A module called several times per pass (a detection head shared across FPN
    levels) keeps only its last call; tap the neck level instead. Transformer layers give
    ``(B, N, C)`` tokens: ``tokens`` folds them into a ``(B, C, h, w)`` map (see
    :class:`~tat_mm.distill.token_to_map.TokensToMap`).

    Args:
        model (nn.Module): The model to tap.
        path (str): Dotted module path of the sub-module.
        index (int, optional): Pick this element when the module returns (or receives) a tuple or
            list, e.g. an FPN level. Defaults to None.
        use_input (bool): Record the module's first positional input instead of its output.
            Defaults to False.
        model_name (str): 'student' or 'teacher', for error messages. Defaults to 'model'.
        tokens (dict, optional): Turn ``(B, N, C)`` tokens into a ``(B, C, h, w)`` map, with this
            layout (``grid``, ``num_extra_tokens``; ``{}``: both from the model). Defaults to None
            (record the value as it is).
    """

    def __init__(self,
                 model: nn.Module,
                 path: str,
                 index: Optional[int] = None,
                 use_input: bool = False,
                 model_name: str = 'model',
                 tokens: Optional[dict] = None):
        self.path = path
        self.index = index
        self.use_input = use_input
        self.model_name = model_name
        self.value: Optional[torch.Tensor] = None
        self.on_record = None  # optional callback, set by TapGroup
        if path.split('.')[0] == 'data_preprocessor':
            raise ValueError(
                f'{model_name} tap {path!r}: the data preprocessor is no feature to distil: it '
                'turns the batch into a dict of normalised images and data samples before the '
                'model runs (and the teacher gets its input from the student\'s preprocessor, it '
                'never runs its own). To compare the preprocessed images, tap the input of the '
                "first module instead: dict(student='backbone', teacher='backbone', "
                'use_input=True, ...); for features, tap a backbone stage (tools/inspect_taps.py '
                'lists them).')
        module = get_submodule(model, path, model_name)
        self.to_map = None if tokens is None else TokensToMap(
            model, path, tap_name=f'{model_name} tap {self.name!r}', **tokens)
        self._handle = module.register_forward_hook(self._hook)

    @property
    def name(self) -> str:
        """str: The tap's name in logs, e.g. ``'neck.2'`` or ``'decode_head.bottleneck'``."""
        name = self.path + ('.input' if self.use_input else '')
        return name if self.index is None else f'{name}.{self.index}'

    def _hook(self, module: nn.Module, args: tuple, output) -> None:
        value = args[0] if self.use_input else output
        if self.index is not None:
            if not isinstance(value, (tuple, list)):
                raise ValueError(f'{self.model_name} tap {self.path!r} has index={self.index} but the '
                                 f'module {"input" if self.use_input else "output"} is a '
                                 f'{type(value).__name__}, not a tuple; remove index, or set '
                                 'it for one side only: index=dict(student=..., teacher=...).')
            if not -len(value) <= self.index < len(value):
                raise ValueError(f'{self.model_name} tap {self.path!r}: index={self.index} is out of '
                                 f'range for a tuple of {len(value)} elements.')
            value = value[self.index]
        if isinstance(value, dict):
            raise ValueError(f'{self.model_name} tap {self.name!r} recorded a dict (keys '
                             f'{sorted(map(str, value))}), not a tensor: tap the module that '
                             'produces the feature you want (one of its inner layers), or its '
                             'consumer with use_input=True.')
        if not isinstance(value, torch.Tensor):
            raise ValueError(f'{self.model_name} tap {self.name!r} recorded a {type(value).__name__}, '
                             'not a tensor; set `index` to pick one element of a tuple output.')
        if self.to_map is not None:
            value = self.to_map(value)
        self.value = value
        if self.on_record is not None:
            self.on_record()

    def pop(self) -> torch.Tensor:
        """Return the recorded tensor and forget it (so a stale value is never reused)."""
        if self.value is None:
            raise RuntimeError(f'{self.model_name} tap {self.name!r} recorded nothing in the last '
                               'forward pass: the module was not called. Tap a module that runs in '
                               'this forward mode.')
        value, self.value = self.value, None
        return value

    def remove(self) -> None:
        """Remove the forward hook (and the token layout's)."""
        self._handle.remove()
        if self.to_map is not None:
            self.to_map.remove()


class TapGroup:
    """All taps of one model; can stop the forward pass once every tap has fired.

    Args:
        taps (Sequence[FeatureTap]): The taps.
        stop_when_complete (bool): Raise :class:`TapsComplete` as soon as every tap has recorded a
            value, which skips the rest of the model (used for the teacher, whose head and losses
            are often not needed). Defaults to False.
    """

    def __init__(self, taps: Sequence[FeatureTap], stop_when_complete: bool = False):
        self.taps: List[FeatureTap] = list(taps)
        self.stop_when_complete = stop_when_complete
        for tap in self.taps:
            tap.on_record = self._on_record

    def _on_record(self) -> None:
        if self.stop_when_complete and all(t.value is not None for t in self.taps):
            raise TapsComplete

    def clear(self) -> None:
        """Forget recorded values (call before a forward pass)."""
        for tap in self.taps:
            tap.value = None

    def pop_all(self) -> Dict[str, torch.Tensor]:
        """Return ``{tap.name: tensor}`` for every tap and forget the values."""
        return {tap.name: tap.pop() for tap in self.taps}


def feature_layout_hint(feature: torch.Tensor) -> str:
    """Why a loss expecting ``(B, C, H, W)`` maps may reject ``feature``, and what to change."""
    if feature.dim() == 3:
        return (' The taps give (B, N, C) transformer tokens: set tokens=True in this distill entry '
                '(or tokens=dict(student=..., teacher=...)) to compare them as (B, C, h, w) maps.')
    if feature.dim() == 2:
        return (' The taps give pooled (B, C) outputs (class token, global average or logits): '
                'feature losses need (B, C, H, W) maps, so tap earlier modules (before the pooling); '
                'logits go to KDLoss.')
    return ''


def rank_mismatch_message(student_tap: str, student_feat: torch.Tensor, teacher_tap: str,
                          teacher_feat: torch.Tensor) -> str:
    """The error for a distill pair whose student and teacher features have different ranks."""

    def describe(feature: torch.Tensor) -> str:
        kind = {2: 'pooled (B, C)', 3: 'tokens (B, N, C)', 4: 'a map (B, C, H, W)'}.get(
            feature.dim(), f'{feature.dim()}-D')
        return f'{tuple(feature.shape)}, {kind}'

    fixes = []
    for role, tap, feature in (('student', student_tap, student_feat),
                               ('teacher', teacher_tap, teacher_feat)):
        if feature.dim() == 2:
            fixes.append(f'the {role} tap {tap!r} is already pooled: tap an earlier {role} module '
                         '(before its global pooling / class token)')
        elif feature.dim() == 3:
            fixes.append(f'the {role} tap {tap!r} gives transformer tokens: fold them into a map '
                         'with `tokens` in this distill entry (tokens=True: both sides, '
                         f'tokens=dict({role}=True): the {role} only)')
    fix = '; '.join(fixes) if fixes else 'tap modules whose outputs have the same layout'
    return (f'Distill pair student {student_tap!r} gives {describe(student_feat)} but teacher '
            f'{teacher_tap!r} gives {describe(teacher_feat)}: the losses compare features of the '
            f'same layout. Fix: {fix}.')
