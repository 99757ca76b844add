"""Token taps: turn a transformer's (B, N, C) tokens into a (B, C, h, w) feature map.

Vision transformers (mmpretrain's ``VisionTransformer``, DeiT, ...) pass ``(B, N, C)`` tokens
between their layers: a few extra tokens first (class, distillation, register tokens), then the
``h x w`` patch tokens row by row. The feature losses compare ``(B, C, H, W)`` maps, so a token tap
drops the extra tokens and folds the patch tokens back into their grid. The losses never learn
what a transformer is.

The layout comes from the model where it can: the number of extra tokens from the backbone's
``num_extra_tokens`` (mmpretrain) or ``with_cls_token`` (mmseg), none for a backbone with a patch
embedding and no class token (Swin); the grid from the ``(h, w)`` shapes of this very forward pass:
what the backbone's ``patch_embed`` returned, what the modules on the tap's path were called with
or the tapped module returned (Swin's stages and blocks after patch merging), so any input size
works; else the backbone's ``patch_resolution``. Either can be given explicitly instead. A
DETR-family encoder's memory (several levels concatenated) has no single grid: an error says what
to tap instead.
"""
from typing import List, Optional, Sequence, Tuple

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


def _extra_tokens_of(owner: nn.Module) -> Optional[int]:
    """The number of tokens before the patch tokens, as ``owner`` (a backbone) describes it."""
    if hasattr(owner, 'num_extra_tokens'):  # mmpretrain (ViT 1, DeiT 2, Swin 0)
        return int(owner.num_extra_tokens)
    if hasattr(owner, 'with_cls_token'):  # mmseg's VisionTransformer
        return int(bool(owner.with_cls_token))
    if hasattr(owner, 'cls_token'):  # a class token, plus DeiT's distillation token
        return 1 + int(hasattr(owner, 'dist_token'))
    if hasattr(owner, 'patch_embed'):  # hierarchical transformers (mmseg Swin, PVT): no class token
        return 0
    return None


def _as_grid(value) -> Optional[Tuple[int, int]]:
    """``(h, w)`` if ``value`` is a 2-element shape (tuple, list, ``torch.Size``) of positive ints."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    return None


def _detr_transformer_error(model: nn.Module, path: str, tap_name: str) -> Optional[str]:
    """The error for ``tokens`` on a DETR-family encoder / decoder tap (None: not one)."""
    parts = path.split('.') if path else []
    for depth in range(len(parts), -1, -1):
        prefix = '.'.join(parts[:depth])
        module = model.get_submodule(prefix) if prefix else model
        if not (hasattr(module, 'pre_transformer') and hasattr(module, 'encoder')):
            continue
        rest = parts[depth:]
        neck = f'{prefix}.neck' if prefix else 'neck'
        if rest[:1] == ['encoder']:
            return (f'{tap_name}: the {type(module).__name__} encoder\'s tokens (B, N, C) are its '
                    'input levels flattened and concatenated (N = the sum of h x w over the levels: '
                    'Deformable DETR and DINO use several levels of different sizes), so there is no '
                    'single grid to fold them into. Fold one level with tokens=dict(level=k) (the '
                    "encoder's spatial_shapes of this pass: Deformable DETR, DINO), or tap the maps "
                    f"they are made of instead, without `tokens`: the neck's levels, e.g. "
                    f"dict(student='{neck}', teacher='{neck}', index=k), or the backbone stages.")
        if rest[:1] == ['decoder']:
            return (f'{tap_name}: the {type(module).__name__} decoder\'s tokens (B, num_queries, C) '
                    'are object queries, not image positions: they have no grid. For feature maps, '
                    f"tap the neck's levels, e.g. dict(student='{neck}', teacher='{neck}', index=k), "
                    'without `tokens`.')
        return None
    return None


class TokensToMap:
    """Folds the ``(B, N, C)`` tokens a tap records into a ``(B, C, h, w)`` map.

    The grid is found in each forward pass: from what the backbone's ``patch_embed`` returns, and
    from the ``(h, w)`` shapes the modules on the tap's path receive or the tapped module returns
    (Swin's stages and blocks take ``hw_shape`` and return it with their tokens, so stages after
    patch merging are found too); the last of these whose ``h * w`` is the number of patch tokens
    is the grid. Any input size works.

    Args:
        model (nn.Module): The tapped model (student or teacher).
        path (str): Module path of the tap, e.g. ``'backbone.layers.11'``.
        grid (Sequence[int], optional): The patch grid ``(h, w)``. Defaults to None: found in each
            forward pass (see above), else the backbone's ``patch_resolution``.
        num_extra_tokens (int, optional): Tokens before the patch tokens (class, distillation,
            register tokens), dropped. Defaults to None: the backbone's ``num_extra_tokens``, 1 / 0
            from its ``with_cls_token``, or 0 for a backbone with a patch embedding and no class
            token (Swin).
        tap_name (str): How to call the tap in errors, e.g. ``"student tap 'backbone.ln1'"``.
            Defaults to 'tap'.
        level (int, optional): The tokens are several feature levels flattened and concatenated
            (a Deformable DETR / DINO encoder's memory): fold level ``level`` alone, with the
            ``spatial_shapes`` the modules on the tap's path were called with in this pass.
            Defaults to None.
    """

    def __init__(self,
                 model: nn.Module,
                 path: str,
                 grid: Optional[Sequence[int]] = None,
                 num_extra_tokens: Optional[int] = None,
                 tap_name: str = 'tap',
                 level: Optional[int] = None):
        self.tap_name = tap_name
        self._seen_grids: List[Tuple[int, int]] = []  # (h, w) shapes seen in this forward pass
        self._handles = []
        self.level = level
        self._level_shapes: Optional[List[Tuple[int, int]]] = None  # spatial_shapes of this pass
        if level is not None:
            self._init_level(model, path, level, grid, num_extra_tokens)
            return
        detr_error = _detr_transformer_error(model, path, tap_name)
        if detr_error is not None and grid is None:
            raise ValueError(detr_error)
        owner_path, owner = _owner(model, path)
        self.owner_path = owner_path
        self.owner = owner
        where = f'{type(owner).__name__} at {owner_path!r}' if owner_path else 'the model'
        if num_extra_tokens is None and owner is not None:
            num_extra_tokens = _extra_tokens_of(owner)
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
            self._hook_grid_sources(model, path)
            if (not isinstance(getattr(owner, 'patch_embed', None), nn.Module)
                    and getattr(owner, 'patch_resolution', None) is None):
                raise ValueError(
                    f'{tap_name}: cannot find the patch grid of {where}: no `patch_embed` or '
                    '`patch_resolution`. Give it in the distill entry, e.g. '
                    'tokens=dict(grid=(14, 14)).')

    def _init_level(self, model: nn.Module, path: str, level: int, grid, num_extra_tokens) -> None:
        """``level`` mode: hook every module on the path for its ``spatial_shapes`` argument."""
        if isinstance(level, bool) or not isinstance(level, int) or grid is not None:
            raise ValueError(f'{self.tap_name}: tokens=dict(level=k) takes one int level and no '
                             f'grid (the level sizes come from the model); got level={level!r}, '
                             f'grid={grid!r}.')
        self.owner_path, self.owner, self.grid = '', None, None
        self.num_extra_tokens = int(num_extra_tokens or 0)
        parts = path.split('.') if path else []
        for depth in range(1, len(parts) + 1):
            module = model.get_submodule('.'.join(parts[:depth]))
            self._handles.append(module.register_forward_pre_hook(self._record_levels,
                                                                  with_kwargs=True))

    def _record_levels(self, module: nn.Module, args: tuple, kwargs: dict):
        shapes = kwargs.get('spatial_shapes')
        if isinstance(shapes, torch.Tensor) and shapes.dim() == 2 and shapes.shape[1] == 2:
            self._level_shapes = [(int(h), int(w)) for h, w in shapes.tolist()]

    def _fold_level(self, tokens: torch.Tensor) -> torch.Tensor:
        """The ``(B, C, h, w)`` map of level ``self.level`` of multi-level ``tokens``."""
        shapes = self._level_shapes
        if shapes is None:
            raise ValueError(f'{self.tap_name}: tokens=dict(level={self.level}) needs the levels\' '
                             'spatial_shapes, but no module on the tap\'s path was called with '
                             'them in this pass (DETR\'s single-level encoder is not): tap the '
                             "neck's level instead, e.g. index=k without `tokens`.")
        if not -len(shapes) <= self.level < len(shapes):
            raise ValueError(f'{self.tap_name}: tokens=dict(level={self.level}) but the tokens '
                             f'have {len(shapes)} levels ({shapes}).')
        batch, num_tokens, channels = tokens.shape
        sizes = [h * w for h, w in shapes]
        if num_tokens != self.num_extra_tokens + sum(sizes):
            raise ValueError(f'{self.tap_name} gives {num_tokens} tokens, but its levels '
                             f'{shapes} make {sum(sizes)}: these are not the multi-level tokens '
                             'of this pass; tap the encoder or one of its layers.')
        level = self.level % len(shapes)
        start = self.num_extra_tokens + sum(sizes[:level])
        h, w = shapes[level]
        return tokens[:, start:start + h * w].transpose(1, 2).reshape(batch, channels, h, w)

    def _hook_grid_sources(self, model: nn.Module, path: str) -> None:
        """Hooks that record the ``(h, w)`` shapes of this pass (cleared when the owner starts)."""
        start = self.owner if self.owner is not None else model
        self._handles.append(start.register_forward_pre_hook(lambda module, args: self._seen_grids.clear()))
        patch_embed = getattr(self.owner, 'patch_embed', None)
        if isinstance(patch_embed, nn.Module):
            # mmcv / mmseg PatchEmbed return (tokens, (h, w)).
            self._handles.append(patch_embed.register_forward_hook(self._record_output))
        # Every module from the owner down to the tapped one: the (h, w) it is called with (Swin's
        # stages and blocks: forward(x, hw_shape)); the tapped one also: what it returns.
        parts = path.split('.') if path else []
        first = len(self.owner_path.split('.')) if self.owner_path else 0
        for depth in range(first + 1, len(parts) + 1):
            module = model.get_submodule('.'.join(parts[:depth]))
            self._handles.append(module.register_forward_pre_hook(self._record_args, with_kwargs=True))
        if parts:
            self._handles.append(model.get_submodule(path).register_forward_hook(self._record_output))

    def _record(self, values) -> None:
        for value in values:
            found = _as_grid(value)
            if found is not None:
                self._seen_grids.append(found)

    def _record_args(self, module: nn.Module, args: tuple, kwargs: dict):
        self._record(list(args) + list(kwargs.values()))

    def _record_output(self, module: nn.Module, args: tuple, output) -> None:
        if isinstance(output, (tuple, list)):
            self._record(output)

    def current_grid(self, num_patches: Optional[int] = None) -> Tuple[int, int]:
        """(h, w) of the patch tokens in the current forward pass.

        Args:
            num_patches (int, optional): The number of patch tokens: the last grid seen in this
                pass with ``h * w == num_patches`` is taken. Defaults to None: the last one seen.
        """
        if self.grid is not None:
            return self.grid
        seen = [g for g in self._seen_grids if num_patches is None or g[0] * g[1] == num_patches]
        if seen:
            return seen[-1]
        if self._seen_grids:
            return self._seen_grids[-1]  # the count does not match: the caller says so
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
        if self.level is not None:
            return self._fold_level(tokens)
        batch, num_tokens, channels = tokens.shape
        h, w = self.current_grid(num_tokens - self.num_extra_tokens)
        if num_tokens != self.num_extra_tokens + h * w:
            seen = sorted(set(self._seen_grids), key=self._seen_grids.index)
            grids = (f' (grids seen in this pass: {", ".join(f"{a}x{b}" for a, b in seen)})'
                     if len(seen) > 1 else '')
            raise ValueError(
                f'{self.tap_name} gives {num_tokens} tokens, but {self.num_extra_tokens} extra '
                f'tokens + a {h}x{w} patch grid make {self.num_extra_tokens + h * w}{grids}. Set '
                'tokens=dict(grid=(h, w), num_extra_tokens=k) in the distill entry to match the '
                'model.')
        patches = tokens[:, self.num_extra_tokens:]
        return patches.transpose(1, 2).reshape(batch, channels, h, w)

    def remove(self) -> None:
        """Remove the hooks that find the grid."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


_LAYOUT_KEYS = {'grid', 'num_extra_tokens', 'level'}


def split_tokens_option(tokens) -> Tuple[Optional[dict], Optional[dict]]:
    """Per-side token layouts ``(student, teacher)`` from a distill entry's ``tokens`` value.

    ``True`` (both sides, layout from each model), a layout ``dict(grid=..., num_extra_tokens=...)``
    for both sides, or ``dict(student=..., teacher=...)`` with ``True`` / a layout / ``None`` per side
    (e.g. ``dict(student=True)`` for a DeiT student and a CNN teacher), or ``dict(level=k)``: level
    ``k`` of a multi-level encoder memory (Deformable DETR, DINO). ``None`` means no tokens.

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
                         f'num_extra_tokens=k) or dict(level=k); got {value!r}.')

    if isinstance(tokens, dict) and set(tokens) & {'student', 'teacher'}:
        unknown = set(tokens) - {'student', 'teacher'}
        if unknown:
            raise ValueError('`tokens` is either a layout for both sides or '
                             f'dict(student=..., teacher=...), not both; got keys {sorted(tokens)}.')
        return layout(tokens.get('student'), 'student'), layout(tokens.get('teacher'), 'teacher')
    return layout(tokens, 'student'), layout(tokens, 'teacher')
