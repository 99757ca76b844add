#!/usr/bin/env bash
# Set up everything tat_mm needs in ./.venv: the pinned PyTorch + OpenMMLab stack
# (requirements/stack.txt), mmcv 2.1.0 compiled with its ops, tat_mm itself and the test tools.
#
#   bash tools/setup_env.sh
#
# First run on a fresh 2-core machine: ~25-30 min (about 20 of them compiling mmcv). The mmcv
# wheel is cached in $TAT_MM_CACHE (default ~/.cache/tat_mm), keyed by the torch version, so a
# second set-up on the same machine takes a few minutes.
# Env: VENV (default .venv), PYTHON (default python3), TAT_MM_CACHE, MAX_JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
CACHE=${TAT_MM_CACHE:-$HOME/.cache/tat_mm}
TORCH_VERSION=2.14.1
MMCV_VERSION=2.1.0
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export PIP_DISABLE_PIP_VERSION_CHECK=1

step() { echo "[setup $(date +%H:%M:%S)] $*"; }

step "virtual environment: $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"  # the venv's ninja drives the parallel mmcv build
PIP=("$PY" -m pip install --progress-bar off)
# setuptools<81: mmcv's setup.py imports pkg_resources, removed in setuptools 81.
"${PIP[@]}" -q -c requirements/stack.txt "pip>=24" setuptools wheel ninja

step "torch $TORCH_VERSION + torchvision (the CUDA build; runs on CPU too, ~5 GB on first install)"
"${PIP[@]}" -q -c requirements/stack.txt torch torchvision

WHEELS="$CACHE/wheels/torch-$TORCH_VERSION"
mkdir -p "$WHEELS"
MMCV_WHEEL=$(ls "$WHEELS"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$MMCV_WHEEL" ]; then
  step "building mmcv $MMCV_VERSION with ops from source (~20 min on 2 cores; progress below)"
  BUILD=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUILD"
  tar -xzf "$BUILD"/mmcv-$MMCV_VERSION.tar.gz -C "$BUILD"
  # torch >= 2.10 headers require C++20; mmcv 2.1.0 hard-codes -std=c++17.
  sed -i 's/-std=c++17/-std=c++20/g' "$BUILD/mmcv-$MMCV_VERSION/setup.py"
  # The full log goes to a file; every 30 s the last ninja "[i/n]" step is printed as progress.
  set +e
  MMCV_WITH_OPS=1 FORCE_CUDA=0 "$PY" -m pip wheel -v --no-build-isolation --no-deps \
      -w "$BUILD/dist" "$BUILD/mmcv-$MMCV_VERSION" > "$BUILD/build.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    last=$(grep -oE '^\s*\[[0-9]+/[0-9]+\]' "$BUILD/build.log" | tail -n 1 | tr -d ' ')
    step "  mmcv build still running ${last:-(configuring)}"
  done
  wait "$pid"; rc=$?
  set -e
  if [ $rc -ne 0 ]; then
    tail -n 60 "$BUILD/build.log"
    echo "mmcv build failed (rc=$rc); full log: $BUILD/build.log" >&2
    exit $rc
  fi
  cp "$BUILD"/dist/mmcv-$MMCV_VERSION-*.whl "$WHEELS/"
  MMCV_WHEEL=$(ls "$WHEELS"/mmcv-$MMCV_VERSION-*.whl | head -n 1)
  rm -rf "$BUILD"
else
  step "reusing cached mmcv wheel $MMCV_WHEEL"
fi

step "mmcv, mmengine, mmsegmentation, mmpretrain, mmdet"
# ftfy and regex: `import mmseg` needs them but mmsegmentation does not declare them.
"${PIP[@]}" -q -c requirements/stack.txt "$MMCV_WHEEL" mmengine mmsegmentation mmpretrain mmdet \
    ftfy regex

step "tat_mm (editable) and test tools"
"${PIP[@]}" -q -c requirements/stack.txt -r requirements/runtime.txt -r requirements/tests.txt
"${PIP[@]}" -q --no-deps --no-build-isolation -e .

step "checking the stack"
"$PY" -c "import tat_mm, mmseg, mmdet, mmpretrain, mmcv.ops, torch, torchvision; print('tat_mm', tat_mm.__version__, '| torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmseg', mmseg.__version__, '| mmdet', mmdet.__version__, '| mmpretrain', mmpretrain.__version__)"
step "done. Run the tests with: bash tools/run_tests.sh"
