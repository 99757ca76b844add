"""Benchmark the TaT losses against naive implementations and print a markdown table.

(a) Full TaT forward+backward: ours (``scaled_dot_product_attention``, no N x N matrix) vs the explicit
    ``softmax(q @ k^T) @ v``; peak extra memory and time.
(b) Patch-group (patches_per_side=16, group 4) and anchor-point (pool 4) at batch 16, the paper's VOC
    settings: ours (whole-batch reshapes) vs a per-image Python loop written like the authors' code
    (per image: embed, unfold, loop over groups; per image: embed, pool, TaT).

Every case runs in a fresh subprocess. CPU peak memory is ``ru_maxrss`` after the case minus
``ru_maxrss`` after set-up (inputs, module and a small warm-up already done); on CUDA it is
``max_memory_allocated`` minus the allocation after set-up.

    python benchmarks/bench_losses.py            # full sizes (a few minutes on 2 CPU cores)
    python benchmarks/bench_losses.py --quick    # small sizes, seconds
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def naive_attention(query, key, value, key_mask=None):
    """The explicit-matrix attention the memory comparison is against."""
    logits = query @ key.transpose(-2, -1)
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask, float('-inf'))
    return torch.softmax(logits, dim=-1) @ value


def authors_patch_group(mod, s, t, per_side, group):
    """Per image, like the authors' seg code: embed on batch 1, unfold (remainder dropped), loop over
    groups, explicit matrix, mean of the group MSEs."""
    losses = []
    for b in range(s.shape[0]):
        q, k, v = mod.query_embed(s[b:b + 1]), mod.key_embed(t[b:b + 1]), mod.value_embed(s[b:b + 1])
        size = t.shape[2] // per_side
        c = t.shape[1]

        def unfold(x):
            return F.unfold(x, size, stride=size).view(c, size * size, -1).permute(2, 1, 0)  # (L, N, C)

        q, k, v, tgt = unfold(q), unfold(k), unfold(v), unfold(t[b:b + 1])
        for g0 in range(0, q.shape[0], group):
            def cat(x):
                return x[g0:g0 + group].permute(1, 0, 2).reshape(size * size, -1)

            rebuilt = torch.softmax(cat(q) @ cat(k).T, dim=-1) @ cat(v)
            losses.append(F.mse_loss(rebuilt, cat(tgt)))
    return torch.stack(losses).mean()


def authors_anchor_point(mod, s, t, pool):
    """Per image: embed on batch 1, average-pool, full TaT with the explicit matrix."""
    losses = []
    for b in range(s.shape[0]):
        def flat(x):
            return F.avg_pool2d(x, pool, pool).flatten(2)[0].T

        q, k, v = flat(mod.query_embed(s[b:b + 1])), flat(mod.key_embed(t[b:b + 1])), flat(
            mod.value_embed(s[b:b + 1]))
        rebuilt = torch.softmax(q @ k.T, dim=-1) @ v
        losses.append(F.mse_loss(rebuilt, flat(t[b:b + 1])))
    return torch.stack(losses).mean()


def build_case(case, batch, size, channels):
    """Return a closure computing the loss for one case."""
    from tat_mm.losses import AnchorPointTaTLoss, PatchGroupTaTLoss, TaTLoss
    kind, impl = case.split(':')
    if kind == 'full':
        # Non-parametric: the conv+BN embeddings cost the same in both implementations (they add
        # ~190 MB at 129x129, 256 channels), so leave them out to compare the attention itself.
        mod = TaTLoss(channels, channels, 'identity', 'identity', 'identity')
    elif kind == 'patch':
        mod = PatchGroupTaTLoss(channels, channels, patches_per_side=16, group_size=4)
    else:
        mod = AnchorPointTaTLoss(channels, channels, pool_size=4)

    if kind == 'full' and impl == 'naive':
        def fn(s, t):
            with mock.patch('tat_mm.losses.tat_loss.tat_attention', naive_attention):
                return mod(s, t)
    elif kind == 'patch' and impl == 'loop':
        def fn(s, t):
            return authors_patch_group(mod, s, t, 16, 4)
    elif kind == 'anchor' and impl == 'loop':
        def fn(s, t):
            return authors_anchor_point(mod, s, t, 4)
    else:
        fn = mod
    return mod, fn


def run_case(args):
    """Child process: one case, prints a JSON line."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    mod, fn = build_case(args.case, args.batch, args.size, args.channels)
    mod.to(device)

    def step(size):
        s = torch.randn(args.batch, args.channels, size, size, device=device, requires_grad=True)
        t = torch.randn(args.batch, args.channels, size, size, device=device)
        return s, t

    s, t = step(32)  # warm-up: load kernels, allocate thread pools
    fn(s, t).backward()
    s, t = step(args.size)
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(args.repeats):
        s.grad = None
        start = time.perf_counter()
        fn(s, t).backward()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(json.dumps({'time_s': min(times), 'peak_mb': peak / 2**20}))


def spawn(case, batch, size, args):
    cmd = [sys.executable, __file__, '--case', case, '--batch', str(batch), '--size', str(size),
           '--channels', str(args.channels), '--repeats', str(args.repeats), '--device', args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'case {case} failed:\n{proc.stderr}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='small sizes for a smoke run')
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--repeats', type=int, default=1, help='timed runs per case (min is kept)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--only', choices=('full', 'seg'), help='run only part (a) or part (b)')
    parser.add_argument('--case', help=argparse.SUPPRESS)
    parser.add_argument('--batch', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--size', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return run_case(args)
    if args.quick:
        args.channels = 32
    full_sizes = (32, 48) if args.quick else (64, 129)
    seg_batch, seg_size = (4, 65) if args.quick else (16, 129)

    print(f'device: {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, '
          f'{args.channels} channels\n')
    print('| loss | batch x map | impl | time (s) | peak extra mem (MB) | speed-up | mem ratio |')
    print('|---|---|---|---|---|---|---|')
    rows = [] if args.only == 'seg' else [('full', 'naive', 1, size) for size in full_sizes]
    if args.only != 'full':
        rows += [('patch', 'loop', seg_batch, seg_size), ('anchor', 'loop', seg_batch, seg_size)]
    names = {'full': 'TaT (full, non-parametric)', 'patch': 'patch-group (16/side, g=4)', 'anchor': 'anchor-point (pool 4)'}
    for kind, baseline, batch, size in rows:
        ours = spawn(f'{kind}:ours', batch, size, args)
        ref = spawn(f'{kind}:{baseline}', batch, size, args)
        label = 'naive N x N' if baseline == 'naive' else 'per-image loop (authors)'
        speed = ref['time_s'] / ours['time_s']
        mem = ref['peak_mb'] / max(ours['peak_mb'], 1e-3)
        shape = f'{batch} x {size}x{size}'
        print(f"| {names[kind]} | {shape} | ours | {ours['time_s']:.3f} | {ours['peak_mb']:.0f} "
              f'| {speed:.2f}x | {mem:.1f}x |')
        print(f"| {names[kind]} | {shape} | {label} | {ref['time_s']:.3f} | {ref['peak_mb']:.0f} | 1x | 1x |")


if __name__ == '__main__':
    main()
