#!/usr/bin/env bash
# Run the test suite on CPU in the environment made by tools/setup_env.sh.
#   bash tools/run_tests.sh [pytest args]        (TEST_WORKERS=1 for one process)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# Two pytest-xdist workers, one test file each at a time (module fixtures are built once): on the
# 2-core CI machine the suite is mostly single-threaded Python, and two workers take about 0.6x
# the time of one (measured under the same background load: 15.0 vs 25.2 min).
# --durations: the slowest tests in every log (the suite has a 10-minute budget on 2 cores).
exec "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" \
    --dist loadfile --durations=25 "$@"
