#!/usr/bin/env bash
# Run the test suite on CPU in the environment made by tools/setup_env.sh.
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
exec "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
