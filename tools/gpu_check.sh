#!/usr/bin/env bash
# One GPU check of tat_mm, on one GPU, in under 8 minutes; writes one markdown table.
#
#   bash tools/gpu_check.sh [OUT_DIR]        (default: work_dirs/gpu_check)
#
# Runs, each with its own time limit (so the whole stays under 8 minutes):
#   1. the `cuda` tests (tests/test_cuda.py: train steps of every distiller in fp32 and with
#      AmpOptimWrapper, half teachers, DAFA under AMP, checkpoint + resume of the loss scale,
#      export loaded on CPU, one-process NCCL dist_train.sh --amp);
#   2. benchmarks/bench_step.py --device cuda, in float32 and with --amp (the cls / seg / det
#      paper-size configs on synthetic inputs: student step, teacher forward, distillation step);
#   3. benchmarks/bench_losses.py --device cuda, in float32 and with --amp (full TaT vs the naive
#      N x N attention: time and memory; hierarchical TaT vs the authors' per-image code).
# OUT_DIR/gpu_check.md gets the table (one row per check and case); OUT_DIR/logs/ the raw outputs.
# Needs the environment of tools/setup_env.sh (a CUDA build of mmcv); PYTHON=... overrides it.
# Until someone has run it on a GPU, nothing in the README comes from it (docs/amp_and_cuda.md).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${1:-work_dirs/gpu_check}
mkdir -p "$OUT/logs"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "tools/gpu_check.sh: no CUDA GPU here (torch.cuda.is_available() is False); run it on a GPU machine." >&2
  exit 2
fi
START=$(date +%s)
# name, time limit (s), command: output to $OUT/logs/<name>.log, exit status and seconds recorded
run() {
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
  local rc=$?
  echo "$name $rc $(( $(date +%s) - t0 ))" >> "$OUT/logs/status.txt"
  echo "[gpu_check] $name: exit $rc after $(( $(date +%s) - t0 )) s (limit $limit s)"
}
: > "$OUT/logs/status.txt"
# 180 + 2 x 100 + 2 x 40 = 460 s of limits: under 8 minutes with the table.
run cuda_tests 180 "$PYTHON" -m pytest -q -p no:cacheprovider -rs -m cuda tests/test_cuda.py \
    --junitxml="$OUT/logs/cuda_tests.xml"
run bench_step_fp32 100 "$PYTHON" benchmarks/bench_step.py --device cuda --repeats 5
run bench_step_amp 100 "$PYTHON" benchmarks/bench_step.py --device cuda --amp --repeats 5
run bench_losses_fp32 40 "$PYTHON" benchmarks/bench_losses.py --device cuda --repeats 3
run bench_losses_amp 40 "$PYTHON" benchmarks/bench_losses.py --device cuda --amp --repeats 3

"$PYTHON" - "$OUT" "$(( $(date +%s) - START ))" <<'EOF'
"""Merge the logs into one markdown table: check | precision | case | result."""
import os
import sys
import xml.etree.ElementTree as ET

import torch

out, seconds = sys.argv[1], int(sys.argv[2])
logs = os.path.join(out, 'logs')
status = {}
for line in open(os.path.join(logs, 'status.txt')):
    name, rc, secs = line.split()
    status[name] = (int(rc), int(secs))


def exit_note(name):
    rc, secs = status[name]
    return f'{secs} s' + ('' if rc == 0 else (' TIMED OUT' if rc == 124 else f' FAILED (exit {rc})'))


def md_rows(name):
    """Rows (lists of cells) of the first markdown table in a log."""
    rows, started = [], False
    for line in open(os.path.join(logs, f'{name}.log')):
        if line.startswith('|'):
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if started and not set(cells[0]) <= {'-'}:
                rows.append(cells)
            started = True
        elif started:
            break
    return rows


table = []
try:
    suite = ET.parse(os.path.join(logs, 'cuda_tests.xml')).getroot()
    suite = suite if suite.tag == 'testsuite' else suite[0]
    tests, failed = int(suite.get('tests')), int(suite.get('failures')) + int(suite.get('errors'))
    skipped = int(suite.get('skipped'))
    bad = [c.get('name') for c in suite.iter('testcase')
           if c.find('failure') is not None or c.find('error') is not None]
    result = f'{tests - failed - skipped} passed, {failed} failed, {skipped} skipped'
    if bad:
        result += ': ' + ', '.join(bad[:6]) + (' ...' if len(bad) > 6 else '')
except (OSError, ET.ParseError, IndexError):
    result = 'no result (see logs/cuda_tests.log)'
table.append(['tests/test_cuda.py (-m cuda)', 'fp32 + AMP', 'all', result,
              exit_note('cuda_tests')])
for precision in ('fp32', 'amp'):
    name = f'bench_step_{precision}'
    for r in md_rows(name):  # task, input, terms, student, teacher, distill, terms s, ratio, ...
        table.append([f'bench_step ({r[0]} {r[1]})', precision.upper() if precision == 'amp' else
                      'fp32', r[2], f'student step {r[3]} s, teacher fwd {r[4]} s, distill step '
                      f'{r[5]} s; distillation terms {r[7]} of the student step', exit_note(name)])
    if not md_rows(name):
        table.append(['bench_step', precision, '-', 'no table (see logs)', exit_note(name)])
for precision in ('fp32', 'amp'):
    name = f'bench_losses_{precision}'
    rows = md_rows(name)  # loss, shape, impl, time, peak MB, speed-up, mem ratio
    for ours, ref in zip(rows[::2], rows[1::2]):
        table.append([f'bench_losses ({ours[0]})', precision.upper() if precision == 'amp' else
                      'fp32', ours[1], f'ours {ours[3]} s / {ours[4]} MB vs {ref[2]} {ref[3]} s / '
                      f'{ref[4]} MB: {ours[5]} faster, {ours[6]} less memory', exit_note(name)])
    if not rows:
        table.append(['bench_losses', precision, '-', 'no table (see logs)', exit_note(name)])

name = torch.cuda.get_device_name(0)
lines = [f'GPU check of tat_mm on {name}, torch {torch.__version__}, {seconds} s in all '
         f'(tools/gpu_check.sh; raw outputs in logs/).', '',
         '| check | precision | case | result | time |', '|---|---|---|---|---|']
lines += ['| ' + ' | '.join(row) + ' |' for row in table]
with open(os.path.join(out, 'gpu_check.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
print('\n'.join(lines))
EOF
echo "[gpu_check] table: $OUT/gpu_check.md"
