"""The attention core shared by every TaT loss, and the embeddings around it.

TaT (Lin et al., CVPR 2022, Eq. 7) rebuilds the student feature as ``softmax(q @ k^T) @ v`` with one
head, no temperature and no ``1/sqrt(C)`` scaling. On a 129x129 segmentation map the N x N matrix has
16641^2 entries (~1.1 GB in fp32 per image before autograd keeps copies), so it is never built here:
``scaled_dot_product_attention`` computes it blockwise (flash / memory-efficient kernels on CPU and GPU).

Small attention problems take the explicit path instead: when there are no more keys than channels
(patch groups, anchors), the N x N matrix is no larger than the query itself, and on CPU a plain
``softmax(q @ k^T) @ v`` is 2-3x faster there than the blockwise kernel (measured on the
patch-group shapes of DeepLabV3+: 16 positions x 2048 channels per group).
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

EMBED_TYPES = ('identity', 'conv1x1', 'conv3x3')


def tat_attention(query: torch.Tensor,
                  key: torch.Tensor,
                  value: torch.Tensor,
                  key_mask: Optional[torch.Tensor] = None,
                  temperature: float = 1.0,
                  statistics: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """Compute ``softmax(query @ key^T / temperature) @ value`` (the paper: temperature 1).

    The (Nq, Nk) matrix is built only when it is no larger than the query (Nk <= E); otherwise
    ``scaled_dot_product_attention`` computes the result blockwise without it.

    Args:
        query (torch.Tensor): (..., Nq, E) queries.
        key (torch.Tensor): (..., Nk, E) keys.
        value (torch.Tensor): (..., Nk, Ev) values.
        key_mask (torch.Tensor, optional): boolean mask broadcastable to (..., 1, Nk); ``False``
            removes that key from every softmax (used for zero padding). Every query must keep at
            least one key, otherwise its row is NaN. Defaults to None (all keys used).
        temperature (float): softmax temperature. 1 is the paper's Eq. 7 (no scaling); a larger
            value softens attention that is nearly one-hot on trained features (e.g. sqrt(E), the
            usual transformer scaling). Defaults to 1.0.
        statistics (dict, optional): When given, filled with :func:`attention_statistics` of
            this attention (no gradient; the result is unchanged). Defaults to None (nothing
            extra computed).

    Returns:
        torch.Tensor: (..., Nq, Ev), row ``i`` is ``sum_j softmax_j(q_i . k_j / T) v_j``.
    """
    check_temperature('tat_attention', temperature)
    if query.dim() < 3 or query.dim() != key.dim() or key.dim() != value.dim():
        raise ValueError('tat_attention: expected (..., N, C) query/key/value of equal rank >= 3, got '
                         f'query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}')
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError('tat_attention: query/key need the same width and key/value the same length, got '
                         f'query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}')
    if statistics is not None:
        statistics.update(attention_statistics(query, key, key_mask, temperature))
    if key.shape[-2] <= query.shape[-1]:
        # The logits (..., Nq, Nk) are no larger than the query (..., Nq, E): build them.
        logits = query @ key.transpose(-2, -1)
        if temperature != 1.0:
            logits = logits / temperature
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask, float('-inf'))
        return logits.softmax(dim=-1) @ value
    # Strided inputs (e.g. (B, C, N) maps transposed to (B, N, C)) send the CPU kernel down a path that
    # keeps N x N buffers (measured: 1 GB instead of 70 MB at N=9216); copies are only O(N*C).
    query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
    return F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask,
                                          scale=1.0 / temperature)


@torch.no_grad()
def attention_statistics(query: torch.Tensor,
                         key: torch.Tensor,
                         key_mask: Optional[torch.Tensor] = None,
                         temperature: float = 1.0,
                         max_elements: int = 2**24) -> Dict[str, torch.Tensor]:
    """How peaked ``softmax(query @ key^T / temperature)`` is, without gradient.

    ``attn_max`` is the mean over queries of the largest weight (1: one-to-one matching, 1 / Nk:
    uniform); ``attn_entropy`` the mean over queries of the normalised entropy ``H / log(n)``
    (``n`` the keys a query may attend to: 1 = uniform, 0 = one-hot). The weights are built
    explicitly; to keep that at most ``max_elements`` numbers, evenly spaced queries are used
    when there are more (a 129 x 129 map gets a few hundred of its 16,641 query rows).

    Args:
        query (torch.Tensor): (..., Nq, E) queries.
        key (torch.Tensor): (..., Nk, E) keys.
        key_mask (torch.Tensor, optional): Boolean, broadcastable to (..., 1, Nk); ``False``
            removes a key, as in :func:`tat_attention`. Defaults to None.
        temperature (float): Softmax temperature. Defaults to 1.0.
        max_elements (int): Most attention weights built at once. Defaults to 2**24.

    Returns:
        Dict[str, torch.Tensor]: ``attn_max`` and ``attn_entropy``, 0-dim float32 tensors.
    """
    batch_shape = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2])
    num_queries, num_keys = query.shape[-2], key.shape[-2]
    query = query.expand(*batch_shape, *query.shape[-2:]).reshape(-1, num_queries, query.shape[-1])
    key = key.expand(*batch_shape, *key.shape[-2:]).reshape(-1, num_keys, key.shape[-1])
    rows = max(1, min(num_queries, max_elements // (query.shape[0] * num_keys)))
    if rows < num_queries:
        query = query[:, torch.linspace(0, num_queries - 1, rows, device=query.device).long()]
    logits = query.float() @ key.float().transpose(-2, -1) / temperature
    num_valid = torch.full((), float(num_keys), device=logits.device)
    if key_mask is not None:
        mask = key_mask.expand(*batch_shape, 1, num_keys).reshape(-1, 1, num_keys)
        logits = logits.masked_fill(~mask, float('-inf'))
        num_valid = mask.sum(-1).float()  # (M, 1)
    weights = logits.softmax(dim=-1)
    entropy = -torch.where(weights > 0, weights * weights.clamp_min(1e-30).log(),
                           torch.zeros_like(weights)).sum(-1)
    # One admissible key: one-hot by construction (entropy 0).
    entropy = entropy / num_valid.clamp_min(2).log()
    return dict(attn_max=weights.amax(-1).mean(), attn_entropy=entropy.mean())


def check_temperature(owner: str, temperature: float) -> float:
    """Return ``temperature`` as a float, or raise a ValueError naming ``owner`` unless it is > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f'{owner}: temperature must be positive, got {temperature!r}')
    return float(temperature)


def build_tat_embedding(embed_type: str, in_channels: int, out_channels: int) -> nn.Module:
    """Build one TaT embedding (the paper's "linear function" gamma / theta / phi).

    Args:
        embed_type (str): ``'identity'``, ``'conv1x1'`` (Conv1x1 without bias + BN) or ``'conv3x3'``
            (Conv3x3, padding 1, without bias + BN).
        in_channels (int): input width.
        out_channels (int): output width.

    Returns:
        nn.Module: the embedding, mapping (B, in_channels, H, W) to (B, out_channels, H, W).
    """
    if embed_type not in EMBED_TYPES:
        raise ValueError(f'Unknown TaT embedding {embed_type!r}; choose one of {EMBED_TYPES}')
    if embed_type == 'identity':
        if in_channels != out_channels:
            raise ValueError(f"An 'identity' embedding cannot map {in_channels} to {out_channels} "
                             "channels; use 'conv1x1' or 'conv3x3'")
        return nn.Identity()
    kernel_size = 1 if embed_type == 'conv1x1' else 3
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels))


def build_tat_embeddings(student_channels: int, teacher_channels: int, query_embed: str,
                         key_embed: str, value_embed: str) -> Tuple[nn.Module, nn.Module, nn.Module]:
    """Build gamma (student -> query), theta (teacher -> key) and phi (student -> value).

    All three output the teacher width, so they also align channels when widths differ.

    Args:
        student_channels (int): student width Cs.
        teacher_channels (int): teacher width Ct.
        query_embed (str): type of gamma, see :func:`build_tat_embedding`.
        key_embed (str): type of theta.
        value_embed (str): type of phi.

    Returns:
        tuple[nn.Module, nn.Module, nn.Module]: (gamma, theta, phi).
    """
    return (build_tat_embedding(query_embed, student_channels, teacher_channels),
            build_tat_embedding(key_embed, teacher_channels, teacher_channels),
            build_tat_embedding(value_embed, student_channels, teacher_channels))
