#!/usr/bin/env bash
# Run the test suite on CPU in the environment made by tools/setup_env.sh.
#   bash tools/run_tests.sh [pytest args]   (all of tests/ by default; TEST_WORKERS=1 for one process)
# The tests write about 8 GB of real checkpoints (teachers, runner work dirs) under a temporary
# folder that is deleted when the run ends; KEEP_TEST_TMP=1 keeps it (its path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
BASETEMP=$(mktemp -d "${TMPDIR:-/tmp}/tat_mm_tests.XXXXXX")
if [ "${KEEP_TEST_TMP:-0}" = 1 ]; then
  echo "test files kept in $BASETEMP"
else
  trap 'rm -rf "$BASETEMP"' EXIT
fi
# Two pytest-xdist workers, one test file each at a time (module fixtures are built once): on the
# 2-core CI machine the suite is mostly single-threaded Python, and two workers take about 0.6x
# the time of one (measured under the same background load: 15.0 vs 25.2 min).
# --durations: the slowest tests in every log (the suite has a 10-minute budget on 2 cores).
# OpenMP threads that sleep when idle: two workers share two cores, and OpenMP's default of
# spinning while waiting made the same clean-clone run take 591 s instead of 509 s.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" \
    --dist loadfile --durations=25 --basetemp="$BASETEMP" "$@"
