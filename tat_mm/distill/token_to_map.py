"""Token taps: turn a transformer's (B, N, C) tokens into a (B, C, h, w) feature map.

Vision transformers (mmpretrain's ``VisionTransformer``, DeiT, ...) pass ``(B, N, C)`` tokens
between their layers: a few extra tokens first (class, distillation, register tokens), then the
``h x w`` patch tokens row by row. The feature losses compare ``(B, C, H, W)`` maps, so a token tap
drops the extra tokens and folds the patch tokens back into their grid. The losses never learn
what a transformer is.

The layout comes from the model where it can: the number of extra tokens from the backbone's
``num_extra_tokens`` (mmpretrain) or ``with_cls_token`` (mmseg), the grid from what the backbone's
``patch_embed`` returned in this very forward pass (so any input size works), else from its
``patch_resolution``. Either can be given explicitly instead.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn


def _owner(model: nn.Module, path: str) -> Tuple[str, Optional[nn.Module]]:
    """The deepest module on ``path`` (itself, its parents, the model) that describes its tokens."""
    parts = path.split('.') if path else []
    for depth in range(len(parts), -1, -1):
        owner_path = '.'.join(parts[:depth])
        module = model.get_submodule(owner_path) if owner_path else model
        if hasattr(module, 'num_extra_tokens') or hasattr(module, 'patch_embed'):
            return owner_path, module
    return '', None


class TokensToMap:
    """Folds the ``(B, N, C)`` tokens a tap records into a ``(B, C, h, w)`` map.

    Args:
        model (nn.Module): The tapped model (student or teacher).
        path (str): Module path of the tap, e.g. ``'backbone.layers.11'``.
        grid (Sequence[int], optional): The patch grid ``(h, w)``. Defaults to None: read from the
            backbone's ``patch_embed`` output in each forward pass, or its ``patch_resolution``.
        num_extra_tokens (int, optional): Tokens before the patch tokens (class, distillation,
            register tokens), dropped. Defaults to None: the backbone's ``num_extra_tokens``, or 1
            / 0 from its ``with_cls_token``.
        tap_name (str): How to call the tap in errors, e.g. ``"student tap 'backbone.ln1'"``.
            Defaults to 'tap'.
    """

    def __init__(self,
                 model: nn.Module,
                 path: str,
                 grid: Optional[Sequence[int]] = None,
                 num_extra_tokens: Optional[int] = None,
                 tap_name: str = 'tap'):
        self.tap_name = tap_name
        self._runtime_grid: Optional[Tuple[int, int]] = None
        self._handle = None
        owner_path, owner = _owner(model, path)
        self.owner_path = owner_path
        self.owner = owner
        where = f'{type(owner).__name__} at {owner_path!r}' if owner_path else 'the model'
        if num_extra_tokens is None and owner is not None:
            if hasattr(owner, 'num_extra_tokens'):
                num_extra_tokens = int(owner.num_extra_tokens)
            elif hasattr(owner, 'with_cls_token'):
                num_extra_tokens = int(bool(owner.with_cls_token))
        if num_extra_tokens is None:
            raise ValueError(
                f'{tap_name}: cannot tell how many extra (class / distillation / register) tokens '
                f'come before the patch tokens: no module on the path {path!r} has '
                '`num_extra_tokens`. Give it in the distill entry, e.g. '
                'tokens=dict(num_extra_tokens=1, grid=(14, 14)).')
        self.num_extra_tokens = num_extra_tokens
        self.grid = None if grid is None else tuple(int(g) for g in grid)
        if self.grid is not None and len(self.grid) != 2:
            raise ValueError(f'{tap_name}: tokens grid must be (h, w); got {grid!r}.')
        if self.grid is None:
            patch_embed = getattr(owner, 'patch_embed', None)
            if isinstance(patch_embed, nn.Module):
                # mmcv / mmseg PatchEmbed return (tokens, (h, w)): record the grid of this pass.
                self._handle = patch_embed.register_forward_hook(self._record_grid)
            elif getattr(owner, 'patch_resolution', None) is None:
                raise ValueError(
                    f'{tap_name}: cannot find the patch grid of {where}: no `patch_embed` or '
                    '`patch_resolution`. Give it in the distill entry, e.g. '
                    'tokens=dict(grid=(14, 14)).')

    def _record_grid(self, module: nn.Module, args: tuple, output) -> None:
        if isinstance(output, (tuple, list)) and len(output) == 2 and len(output[1]) == 2:
            self._runtime_grid = tuple(int(s) for s in output[1])

    def current_grid(self) -> Tuple[int, int]:
        """(h, w) of the patch tokens in the current forward pass."""
        if self.grid is not None:
            return self.grid
        if self._runtime_grid is not None:
            return self._runtime_grid
        resolution = getattr(self.owner, 'patch_resolution', None)
        if resolution is None:
            raise ValueError(f'{self.tap_name}: the patch grid is unknown (the backbone\'s '
                             '`patch_embed` did not return one). Give it in the distill entry, '
                             'e.g. tokens=dict(grid=(14, 14)).')
        return tuple(int(s) for s in resolution)

    def _earlier_module_hint(self) -> str:
        layers = getattr(self.owner, 'layers', None)
        if isinstance(layers, nn.ModuleList) and len(layers):
            prefix = f'{self.owner_path}.' if self.owner_path else ''
            return (f" Tap an earlier module that still has the tokens, e.g. "
                    f"'{prefix}layers.{len(layers) - 1}' (the last transformer layer).")
        return ' Tap an earlier module that still has the (B, N, C) tokens.'

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return the ``(B, C, h, w)`` map of ``tokens`` ``(B, N, C)``."""
        if tokens.dim() == 2:
            raise ValueError(
                f'{self.tap_name} gives {tuple(tokens.shape)}: pooled (B, C) features (a class '
                'token or a global average), which have no spatial map left to distill.'
                + self._earlier_module_hint())
        if tokens.dim() == 4:
            raise ValueError(f'{self.tap_name} gives {tuple(tokens.shape)}, already a (B, C, H, W) '
                             'map: remove `tokens` for this side of the distill entry.')
        if tokens.dim() != 3:
            raise ValueError(f'{self.tap_name} gives {tuple(tokens.shape)}; `tokens` expects '
                             '(B, N, C) transformer tokens.')
        batch, num_tokens, channels = tokens.shape
        h, w = self.current_grid()
        if num_tokens != self.num_extra_tokens + h * w:
            raise ValueError(
                f'{self.tap_name} gives {num_tokens} tokens, but {self.num_extra_tokens} extra '
                f'tokens + a {h}x{w} patch grid make {self.num_extra_tokens + h * w}. Set '
                'tokens=dict(grid=(h, w), num_extra_tokens=k) in the distill entry to match the '
                'model.')
        patches = tokens[:, self.num_extra_tokens:]
        return patches.transpose(1, 2).reshape(batch, channels, h, w)

    def remove(self) -> None:
        """Remove the hook on the backbone's patch embedding."""
        if self._handle is not None:
            self._handle.remove()


_LAYOUT_KEYS = {'grid', 'num_extra_tokens'}


def split_tokens_option(tokens) -> Tuple[Optional[dict], Optional[dict]]:
    """Per-side token layouts ``(student, teacher)`` from a distill entry's ``tokens`` value.

    ``True`` (both sides, layout from each model), a layout ``dict(grid=..., num_extra_tokens=...)``
    for both sides, or ``dict(student=..., teacher=...)`` with ``True`` / a layout / ``None`` per side
    (e.g. ``dict(student=True)`` for a DeiT student and a CNN teacher). ``None`` means no tokens.

    Args:
        tokens (bool | dict | None): The ``tokens`` value of a distill entry.

    Returns:
        tuple: ``(student layout, teacher layout)``, each a dict (possibly empty) or None.
    """

    def layout(value, side):
        if value is None or value is False:
            return None
        if value is True:
            return {}
        if isinstance(value, dict) and set(value) <= _LAYOUT_KEYS:
            return dict(value)
        raise ValueError(f'`tokens` for the {side}: expected True, None or dict(grid=(h, w), '
                         f'num_extra_tokens=k); got {value!r}.')

    if isinstance(tokens, dict) and set(tokens) & {'student', 'teacher'}:
        unknown = set(tokens) - {'student', 'teacher'}
        if unknown:
            raise ValueError('`tokens` is either a layout for both sides or '
                             f'dict(student=..., teacher=...), not both; got keys {sorted(tokens)}.')
        return layout(tokens.get('student'), 'student'), layout(tokens.get('teacher'), 'teacher')
    return layout(tokens, 'student'), layout(tokens, 'teacher')
