"""Naive float64 references for the TaT losses, shared by the loss tests: explicit loops over images,
pixels, patches and groups, and explicit N x N softmax matrices. They take already embedded maps
(query, key, value, teacher), so a test embeds once and scores any combination of terms."""
import math

import torch

DT = torch.float64


def naive_softmax_attention(q, k, v, key_valid=None, temperature=1.0):
    """q (Nq, E), k (Nk, E), v (Nk, Ev): explicit logits (divided by the temperature), exp and row
    sums."""
    logits = q @ k.T / temperature
    if key_valid is not None:
        logits = logits.masked_fill(~key_valid[None, :], -math.inf)
    logits = logits - logits.max(dim=1, keepdim=True).values
    e = torch.exp(logits)
    return (e / e.sum(dim=1, keepdim=True)) @ v


def pixels(x):
    """(C, H, W) -> (H*W, C) with an explicit loop over the rows and columns."""
    c, h, w = x.shape
    return torch.stack([x[:, i, j] for i in range(h) for j in range(w)])


def ref_tat_maps(q_all, k_all, v_all, target, weight=None, transposed=False, temperature=1.0):
    """Eq. 7 per image on (B, C, H, W) maps: explicit matrix, loop over images, weighted MSE
    sum(w d^2) / (C sum(w))."""
    num, den = 0.0, 0.0
    for b in range(target.shape[0]):
        q, k, v, tgt = pixels(q_all[b]), pixels(k_all[b]), pixels(v_all[b]), pixels(target[b])
        if transposed:  # teacher pixel i queries the student pixels j
            rebuilt = naive_softmax_attention(k, q, v, temperature=temperature)
        else:
            rebuilt = naive_softmax_attention(q, k, v, temperature=temperature)
        w = torch.ones(tgt.shape[0], dtype=DT) if weight is None else pixels(weight[b])[:, 0]
        num = num + (w[:, None] * (rebuilt - tgt) ** 2).sum()
        den = den + w.sum() * tgt.shape[1]
    return num / den if den > 0 else num * 0.0


def ref_patch_group_maps(q_map, k_map, v_map, t, weight=None, patch=None, per_side=None, group=1,
                         temperature=1.0):
    """Per image, per patch, per group loops; map zero-padded, padding weight 0 and masked as key
    where it is padding in all patches of the group; empty patches fill the last group."""
    h, w = t.shape[2:]
    if patch is None:
        patch = (h // per_side[0], w // per_side[1])
    ph, pw = patch
    nh, nw = -(-h // ph), -(-w // pw)
    maps = {'q': q_map, 'k': k_map, 'v': v_map, 't': t}
    wmap = torch.ones(t.shape[0], 1, h, w, dtype=DT) if weight is None else weight
    num, den = 0.0, 0.0
    for b in range(t.shape[0]):
        patches = []  # list of dicts: name -> (C, ph, pw); plus 'valid' and 'w'
        for i in range(nh):
            for j in range(nw):
                p = {}
                for name, x in list(maps.items()) + [('w', wmap)]:
                    padded = torch.zeros(x.shape[1], ph, pw, dtype=DT)
                    crop = x[b, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw]
                    padded[:, :crop.shape[1], :crop.shape[2]] = crop
                    p[name] = padded
                valid = torch.zeros(ph, pw, dtype=torch.bool)
                valid[:min(ph, h - i * ph), :min(pw, w - j * pw)] = True
                p['valid'] = valid
                patches.append(p)
        while len(patches) % group:
            empty = {k_: torch.zeros_like(v_) for k_, v_ in patches[0].items()}
            patches.append(empty)
        for g0 in range(0, len(patches), group):
            members = patches[g0:g0 + group]
            cat = {n: pixels(torch.cat([m[n] for m in members], dim=0)) for n in ('q', 'k', 'v', 't')}
            key_valid = torch.stack([m['valid'].flatten() for m in members]).any(dim=0)
            rebuilt = naive_softmax_attention(cat['q'], cat['k'], cat['v'], key_valid, temperature)
            c = t.shape[1]
            for m_idx, m in enumerate(members):
                wm = pixels(m['w'])[:, 0] * m['valid'].flatten()
                d2 = (rebuilt[:, m_idx * c:(m_idx + 1) * c] - cat['t'][:, m_idx * c:(m_idx + 1) * c]) ** 2
                num = num + (wm[:, None] * d2).sum()
                den = den + wm.sum() * c
    return num / den if den > 0 else num * 0.0


def naive_avg_pool(x, k):
    """Average of the real pixels of each k x k window (stride k), partial windows at the border."""
    b, c, h, w = x.shape
    rows = []
    for i in range(0, h, k):
        cols = []
        for j in range(0, w, k):
            cols.append(x[:, :, i:i + k, j:j + k].sum(dim=(2, 3)) / (min(k, h - i) * min(k, w - j)))
        rows.append(torch.stack(cols, dim=-1))
    return torch.stack(rows, dim=-2)


def ref_anchor_maps(q_map, k_map, v_map, t, weight=None, pool=2, temperature=1.0):
    """Pool embedded maps, teacher and weight with explicit loops, then the reference TaT."""
    pooled = [naive_avg_pool(x, pool) for x in (q_map, k_map, v_map, t)]
    return ref_tat_maps(*pooled, None if weight is None else naive_avg_pool(weight, pool),
                        temperature=temperature)


def embed(mod, s, t):
    """gamma(s), theta(t), phi(s) of a TaT loss module: each embedding applied once."""
    return mod.query_embed(s), mod.key_embed(t), mod.value_embed(s)
