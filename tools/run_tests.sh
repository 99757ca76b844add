#!/usr/bin/env bash
# Run the test suite on CPU in the environment made by tools/setup_env.sh.
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# --durations: the slowest tests in every log (the suite has a 10-minute budget on 2 cores)
exec "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider --durations=25 "$@"
