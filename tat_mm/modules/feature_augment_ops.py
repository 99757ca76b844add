"""The feature augmentation operations of SoKD's DAFA, on (B, C, H, W) maps, pure torch.

Each operation takes the feature, its *strength* (a 0-d tensor in the operation's own unit: shear
factor, fraction of the map, degrees, noise std, drop ratio) and a ``torch.Generator`` for its random
part (sign, cutout centre, noise, permutation, dropped channels), so that the same generator state
gives the same augmentation: the bi-level step evaluates one sampled augmentation several times.

Strength 0 is the identity for every operation but ``ChannelShuffle`` (which has no strength).
Every other operation is differentiable in its strength:

* ShearX/ShearY, TranslateX/TranslateY, Rotate: one affine ``affine_grid`` + ``grid_sample``
  (bilinear, zeros outside), with a random sign per image (AutoAugment's mirroring);
* Cutout: a square with *soft edges*: each pixel is zeroed by the fraction of it the square covers,
  which is piecewise linear in the side (a hard square has no gradient in its side);
* Noise: ``x + std * sigma(x) * N(0, 1)`` with sigma(x) the (detached) per-image std of the map,
  so one std range fits every tap whatever its scale;
* ChannelDrop: each channel dropped when ``u < ratio`` (u uniform per image and channel), hard in
  the forward pass, with the gradient of the relaxed mask ``sigmoid((logit u - logit ratio) / t)``
  (straight-through relaxed Bernoulli, t = 0.5 as DAFA's other relaxed samples).

:data:`OPERATIONS` lists them with the default strength range of the public SoKD code (the range
a magnitude in [0, 1] maps to) and the widest range that still makes sense.
"""
import math
from typing import Callable, Dict, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-6


def _random_sign(x: Tensor, generator: torch.Generator) -> Tensor:
    """(B,) tensor of +-1, one per image."""
    bits = torch.randint(0, 2, (x.shape[0], ), generator=generator, device=x.device)
    return (bits * 2 - 1).to(x.dtype)


def affine_transform(x: Tensor, theta: Tensor) -> Tensor:
    """Resample ``x`` with per-image affine maps in normalised coordinates.

    Args:
        x (Tensor): (B, C, H, W) feature.
        theta (Tensor): (B, 2, 3) maps from output to input coordinates in [-1, 1] (as
            ``F.affine_grid``); the identity gives back ``x``.

    Returns:
        Tensor: (B, C, H, W), zeros where the map samples outside the input.
    """
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


def _theta(x: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor, tx: Tensor,
           ty: Tensor) -> Tensor:
    """(B, 2, 3) ``[[a, b, tx], [c, d, ty]]`` from (B,) entries."""
    row0 = torch.stack([a, b, tx], dim=-1)
    row1 = torch.stack([c, d, ty], dim=-1)
    return torch.stack([row0, row1], dim=1)


def shear_x(x: Tensor, shear: Tensor, generator: torch.Generator) -> Tensor:
    """x_in = x_out + s * y_out in pixels (s = +-shear per image)."""
    h, w = x.shape[-2:]
    s = shear * _random_sign(x, generator)
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return affine_transform(x, _theta(x, one, s * h / w, zero, one, zero, zero))


def shear_y(x: Tensor, shear: Tensor, generator: torch.Generator) -> Tensor:
    """y_in = y_out + s * x_out in pixels (s = +-shear per image)."""
    h, w = x.shape[-2:]
    s = shear * _random_sign(x, generator)
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return affine_transform(x, _theta(x, one, zero, s * w / h, one, zero, zero))


def translate_x(x: Tensor, fraction: Tensor, generator: torch.Generator) -> Tensor:
    """Shift by +-fraction of the map's width."""
    t = 2 * fraction * _random_sign(x, generator)  # the width is 2 in normalised coordinates
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    return affine_transform(x, _theta(x, one, zero, zero, one, t, zero))


def translate_y(x: Tensor, fraction: Tensor, generator: torch.Generator) -> Tensor:
    """Shift by +-fraction of the map's height."""
    t = 2 * fraction * _random_sign(x, generator)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    return affine_transform(x, _theta(x, one, zero, zero, one, zero, t))


def rotate(x: Tensor, degrees: Tensor, generator: torch.Generator) -> Tensor:
    """Rotate by +-degrees about the centre, in pixel space (correct for non-square maps)."""
    h, w = x.shape[-2:]
    angle = degrees * _random_sign(x, generator) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(angle)
    return affine_transform(x, _theta(x, cos, -sin * h / w, sin * w / h, cos, zero, zero))


def _coverage(centre: Tensor, half: Tensor, size: int) -> Tensor:
    """(B, size): the fraction of each unit pixel [i, i+1) inside [centre - half, centre + half]."""
    edges = torch.arange(size, device=centre.device, dtype=centre.dtype)
    lo = torch.maximum(edges[None], (centre - half)[:, None])
    hi = torch.minimum(edges[None] + 1, (centre + half)[:, None])
    return (hi - lo).clamp(0, 1)


def cutout(x: Tensor, side: Tensor, generator: torch.Generator) -> Tensor:
    """Zero a square of ``side * min(H, W)`` pixels at a random centre per image (soft edges).

    The centre is uniform over the map, so the square may be cut by the border (as AutoAugment's
    Cutout).
    """
    b, _, h, w = x.shape
    centres = torch.rand(b, 2, generator=generator, device=x.device, dtype=x.dtype)
    half = side * min(h, w) / 2
    cover_y = _coverage(centres[:, 0] * h, half.expand(b), h)
    cover_x = _coverage(centres[:, 1] * w, half.expand(b), w)
    keep = 1 - cover_y[:, None, :, None] * cover_x[:, None, None, :]
    return x * keep


def gaussian_noise(x: Tensor, std: Tensor, generator: torch.Generator) -> Tensor:
    """Add N(0, (std * sigma)^2) with sigma the per-image std of the map (detached)."""
    sigma = x.detach().flatten(1).std(dim=1).clamp_min(EPS).view(-1, 1, 1, 1)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + std * sigma * noise


def channel_shuffle(x: Tensor, strength: Tensor, generator: torch.Generator) -> Tensor:
    """Permute the channels, one random permutation per image (``strength`` is unused)."""
    b, c = x.shape[:2]
    perm = torch.argsort(torch.rand(b, c, generator=generator, device=x.device), dim=1)
    return x.gather(1, perm[:, :, None, None].expand_as(x))


def channel_drop(x: Tensor, ratio: Tensor, generator: torch.Generator,
                 temperature: float = 0.5) -> Tensor:
    """Zero each channel when ``u < ratio``; straight-through relaxed gradient in ``ratio``."""
    b, c = x.shape[:2]
    u = torch.rand(b, c, generator=generator, device=x.device, dtype=x.dtype).clamp(EPS, 1 - EPS)
    hard = (u >= ratio).to(x.dtype)  # exact identity at ratio 0
    r = ratio.clamp(EPS, 1 - EPS)
    soft = torch.sigmoid((torch.logit(u) - torch.log(r) + torch.log1p(-r)) / temperature)
    keep = hard + soft - soft.detach()
    return x * keep[:, :, None, None]


class FeatureOperation(NamedTuple):
    """One operation: its function, default strength range and the widest allowed range."""
    fn: Callable[[Tensor, Tensor, torch.Generator], Tensor]
    default_range: Tuple[float, float]
    allowed_range: Tuple[float, float]
    has_magnitude: bool = True
    unit: str = ''


#: Operations by name; default ranges from the public SoKD code (see METHODS.md, DAFA).
OPERATIONS: Dict[str, FeatureOperation] = {
    'ShearX': FeatureOperation(shear_x, (0.0, 0.3), (0.0, 1.0), unit='shear factor'),
    'ShearY': FeatureOperation(shear_y, (0.0, 0.3), (0.0, 1.0), unit='shear factor'),
    'TranslateX': FeatureOperation(translate_x, (0.0, 0.45), (0.0, 1.0), unit='of the width'),
    'TranslateY': FeatureOperation(translate_y, (0.0, 0.45), (0.0, 1.0), unit='of the height'),
    'Rotate': FeatureOperation(rotate, (0.0, 30.0), (0.0, 180.0), unit='degrees'),
    'Cutout': FeatureOperation(cutout, (0.0, 0.2), (0.0, 1.0), unit='of the side'),
    'Noise': FeatureOperation(gaussian_noise, (0.0, 0.1), (0.0, 10.0), unit='std / map std'),
    'ChannelShuffle': FeatureOperation(channel_shuffle, (0.0, 0.0), (0.0, 0.0),
                                       has_magnitude=False),
    'ChannelDrop': FeatureOperation(channel_drop, (0.0, 0.5), (0.0, 1.0), unit='drop ratio'),
}


def check_operation(name: str) -> FeatureOperation:
    """The operation called ``name``, or a ``ValueError`` that lists the known ones."""
    if name not in OPERATIONS:
        raise ValueError(f'Unknown DAFA operation {name!r}; the operations are '
                         f'{sorted(OPERATIONS)}.')
    return OPERATIONS[name]


def apply_operation(name: str, x: Tensor, strength: Tensor,
                    generator: torch.Generator) -> Tensor:
    """Apply operation ``name`` with ``strength`` (its own unit) to a (B, C, H, W) feature.

    Args:
        name (str): A key of :data:`OPERATIONS`.
        x (Tensor): (B, C, H, W) feature.
        strength (Tensor | float): Strength in the operation's unit (0-d).
        generator (torch.Generator): Source of the random part, on ``x``'s device.

    Returns:
        Tensor: The augmented feature, same shape as ``x``.
    """
    if x.dim() != 4:
        raise ValueError(f'DAFA operations take (B, C, H, W) features, got {tuple(x.shape)}')
    strength = torch.as_tensor(strength, dtype=x.dtype, device=x.device)
    return check_operation(name).fn(x, strength, generator)
