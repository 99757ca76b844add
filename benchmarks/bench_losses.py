"""Benchmark the TaT losses against naive implementations and print a markdown table.

(a) Full TaT forward+backward: ours (``scaled_dot_product_attention``, no N x N matrix) vs the explicit
    ``softmax(q @ k^T) @ v``; peak extra memory and time.
(b) The segmentation loss at batch 16 (VOC R18 settings: 16 patches per side, groups of 4, 4x4
    anchor pooling): ``HierarchicalTaTLoss`` (whole batch, one embedding shared by both terms) vs
    the authors' ``distillation_loss_all`` as written: a loop over the images, gamma / theta / phi
    (conv1x1 + BN) on batch 1, ``unfold`` into patches (remainder dropped), the groups as the
    ``heads`` of one batched einsum, and the same q / k / v for the anchor-point term.

Every case runs in a fresh subprocess. CPU peak memory is ``ru_maxrss`` after the case minus
``ru_maxrss`` after set-up (inputs, module and a small warm-up already done); on CUDA it is
``max_memory_allocated`` minus the allocation after set-up (with ``torch.cuda.synchronize`` around
the timings). ``OMP_WAIT_POLICY=PASSIVE`` is set here unless already set.

    python benchmarks/bench_losses.py            # full sizes (a few minutes on 2 CPU cores)
    python benchmarks/bench_losses.py --quick    # small sizes, seconds
    python benchmarks/bench_losses.py --device cuda [--amp]   # on a GPU (tools/gpu_check.sh)

``--amp``: the inputs in float16 and each case under float16 autocast, as the losses get them in an
AMP step (ours compute in float32 inside; the naive and the authors' code run as autocast makes
them). Without it nothing changes from the float32 runs.
"""
import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch loads OpenMP

import argparse  # noqa: E402
import contextlib
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


def naive_attention(query, key, value, key_mask=None, temperature=1.0, statistics=None):
    """The explicit-matrix attention the memory comparison is against (``tat_attention``'s
    signature; the benchmark runs temperature 1 and records no statistics)."""
    logits = query @ key.transpose(-2, -1) / temperature
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask, float('-inf'))
    return torch.softmax(logits, dim=-1) @ value


def authors_heads_attention(q, k, v, target, heads):
    """The authors' ``sub_loss``: channels split into ``heads``, one batched einsum, MSE."""
    b, c, h, w = v.shape

    def split(x):  # rearrange 'b (h d) x y -> b h (x y) d'
        return x.reshape(b, heads, c // heads, h * w).transpose(2, 3)

    sim = torch.einsum('bhid,bhjd->bhij', split(q), split(k)).softmax(dim=-1)
    out = torch.einsum('bhij,bhjd->bhid', sim, split(v))
    out = out.transpose(2, 3).reshape(b, c, h, w)  # rearrange 'b h (x y) d -> b (h d) x y'
    return F.mse_loss(out, target)


def authors_grid(x, per_side):
    """``grid_tensor_seq``: (1, C, H, W) -> (1, C, n*m, h, w) patches, the remainder dropped."""
    size = x.shape[2] // per_side
    p = x.unfold(2, size, size).unfold(3, size, size)
    return p.reshape(p.shape[0], p.shape[1], -1, size, size)


def authors_hierarchical(mod, s, t, per_side, group, pool, delta, zeta):
    """``distillation_loss_all`` per image (their forward loops over the batch), summed."""
    total = 0.0
    for b in range(s.shape[0]):
        f_s, f_t = s[b:b + 1], t[b:b + 1]
        q, k, v = mod.query_embed(f_s), mod.key_embed(f_t), mod.value_embed(f_s)  # BN on batch 1
        # Patch-group ('stack_attn'): all patches stacked channel-wise, groups = heads.
        stacked = [authors_grid(x, per_side) for x in (q, k, v, f_t)]
        stacked = [x.permute(0, 2, 1, 3, 4).reshape(1, -1, x.shape[3], x.shape[4]) for x in stacked]
        heads = stacked[0].shape[1] // (group * q.shape[1])
        patch_loss = authors_heads_attention(*stacked, heads)
        # Anchor-point: the same q / k / v pooled, one head.
        pooled = [F.avg_pool2d(x, pool, pool) for x in (q, k, v, f_t)]
        anchor_loss = authors_heads_attention(*pooled, 1)
        total = total + delta * patch_loss + zeta * anchor_loss
    return total


def build_case(case, batch, size, channels):
    """Return (module, closure computing the summed loss) for one case."""
    from tat_mm.losses import HierarchicalTaTLoss, TaTLoss
    kind, impl = case.split(':')
    if kind == 'full':
        # Non-parametric: the conv+BN embeddings cost the same in both implementations (they add
        # ~190 MB at 129x129, 256 channels), so leave them out to compare the attention itself.
        mod = TaTLoss(channels, channels, 'identity', 'identity', 'identity')
        if impl == 'naive':
            def fn(s, t):
                with mock.patch('tat_mm.losses.tat_loss.tat_attention', naive_attention):
                    return mod(s, t)
        else:
            fn = mod
        return mod, fn
    mod = HierarchicalTaTLoss(channels, channels, pool_size=4, patches_per_side=16, group_size=4,
                              patch_weight=0.1, anchor_weight=0.05)
    if impl == 'authors':
        def fn(s, t):
            return authors_hierarchical(mod, s, t.detach(), 16, 4, 4, 0.1, 0.05)
    else:
        def fn(s, t):
            return sum(mod(s, t).values())
    return mod, fn


def run_case(args):
    """Child process: one case, prints a JSON line."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    mod, fn = build_case(args.case, args.batch, args.size, args.channels)
    mod.to(device)

    dtype = torch.float16 if args.amp else torch.float32
    autocast = (torch.autocast(device.type, dtype=torch.float16) if args.amp
                else contextlib.nullcontext())

    def step(size):
        s = torch.randn(args.batch, args.channels, size, size, device=device, dtype=dtype,
                        requires_grad=True)
        t = torch.randn(args.batch, args.channels, size, size, device=device, dtype=dtype)
        return s, t

    def loss_backward(s, t):
        with autocast:
            value = fn(s, t)
        value.backward()

    s, t = step(32)  # warm-up: load kernels, allocate thread pools
    loss_backward(s, t)
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
        loss_backward(s, t)
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
    if args.amp:
        cmd.append('--amp')
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'case {case} failed:\n{proc.stderr}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='small sizes for a smoke run')
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--repeats', type=int, default=1, help='timed runs per case (min is kept)')
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    parser.add_argument('--amp', action='store_true',
                        help='float16 inputs under float16 autocast, as in an AMP step')
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

    device = args.device if args.device == 'cpu' else (
        f'{args.device} ({torch.cuda.get_device_name(torch.device(args.device))})')
    print(f'device: {device}, {"AMP (float16 autocast)" if args.amp else "float32"}, torch '
          f'{torch.__version__}, threads {torch.get_num_threads()}, {args.channels} channels\n')
    print('| loss | batch x map | impl | time (s) | peak extra mem (MB) | speed-up | mem ratio |')
    print('|---|---|---|---|---|---|---|')
    rows = [] if args.only == 'seg' else [('full', 'naive', 1, size) for size in full_sizes]
    if args.only != 'full':
        rows.append(('hier', 'authors', seg_batch, seg_size))
    names = {'full': 'TaT (full, non-parametric)',
             'hier': 'hierarchical (PG 16/side g=4 + AP pool 4)'}
    labels = {'naive': 'naive N x N', 'authors': "authors' code (per image, heads einsum)"}
    for kind, baseline, batch, size in rows:
        ours = spawn(f'{kind}:ours', batch, size, args)
        ref = spawn(f'{kind}:{baseline}', batch, size, args)
        speed = ref['time_s'] / ours['time_s']
        mem = ref['peak_mb'] / max(ours['peak_mb'], 1e-3)
        shape = f'{batch} x {size}x{size}'
        print(f"| {names[kind]} | {shape} | ours | {ours['time_s']:.3f} | {ours['peak_mb']:.0f} "
              f'| {speed:.2f}x | {mem:.1f}x |')
        print(f"| {names[kind]} | {shape} | {labels[baseline]} | {ref['time_s']:.3f} | "
              f"{ref['peak_mb']:.0f} | 1x | 1x |")
    print(f"\nload average 1/5/15 min at the end: {'/'.join(f'{x:.2f}' for x in os.getloadavg())} "
          f'on {os.cpu_count()} CPUs')


if __name__ == '__main__':
    main()
