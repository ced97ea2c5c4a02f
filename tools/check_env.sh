#!/usr/bin/env bash
# Checks the OLDEST environment pyproject.toml declares, installed the way a GPU user installs
# mmrecprune into an environment of their own: torch first, mmcv built against that torch
# (MMCV_WITH_OPS=1, --no-build-isolation), then MMEngine / MMDetection / MMSegmentation and
# `pip install -e .` resolving the rest; then `pip check` and the test suite.
#
#   bash tools/check_env.sh                      # venv in ~/.cache/mmrecprune-check-env, then pytest tests
#   make check-env                               # the same
#   VENV=/tmp/min bash tools/check_env.sh tests/test_packaging.py -x   # args go to pytest
#   CHECK_ENV_SKIP_TESTS=1 bash tools/check_env.sh                     # install + pip check only
#
# The minimum versions are read from pyproject.toml (the ">=" bound of torch, mmcv, mmengine,
# mmdet, mmsegmentation); override one with TORCH_VERSION, MMCV_VERSION, MMENGINE_VERSION,
# MMDET_VERSION, MMSEG_VERSION. TORCH_INDEX_URL adds an index for torch (e.g. a CUDA build).
# Not part of CI or `make test`: building mmcv takes 12-25 minutes on 2 cores (on a machine
# without nvcc / a GPU it builds the CPU ops only, which is what the test suite needs). The built
# mmcv wheel is cached per torch version under ~/.cache/mmrecprune-check-env, apart from pip's
# own cache, so it is never picked up by an environment with another torch.
set -euo pipefail
# REPO: the checkout to test (default: the one this script is in)
cd "${REPO:-$(dirname "$0")/..}"
VENV=${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mmrecprune-check-env/venv}
PY=${PYTHON:-python3}

read -r TORCH_MIN MMCV_MIN MMENGINE_MIN MMDET_MIN MMSEG_MIN < <("$PY" - <<'EOF'
import re
try:
    import tomllib
    deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']
except ImportError:  # Python < 3.11: the dependency strings are one per line
    deps = re.findall(r'^\s*"([^"]+)",?\s*$', open('pyproject.toml').read(), re.M)
low = {}
for dep in deps:
    name, spec = re.match(r'\s*([A-Za-z0-9_.-]+)\s*(.*)', dep).groups()
    found = re.search(r'>=\s*([0-9][^,;\s]*)', spec)
    if found:
        low.setdefault(name.lower(), found.group(1))
print(*(low[k] for k in ('torch', 'mmcv', 'mmengine', 'mmdet', 'mmsegmentation')))
EOF
)
TORCH_VERSION=${TORCH_VERSION:-$TORCH_MIN}
MMCV_VERSION=${MMCV_VERSION:-$MMCV_MIN}
MMENGINE_VERSION=${MMENGINE_VERSION:-$MMENGINE_MIN}
MMDET_VERSION=${MMDET_VERSION:-$MMDET_MIN}
MMSEG_VERSION=${MMSEG_VERSION:-$MMSEG_MIN}
# "2.0" means the newest 2.0.x release
case "$TORCH_VERSION" in *.*.*) TORCH_SPEC="torch==$TORCH_VERSION" ;; *) TORCH_SPEC="torch==$TORCH_VERSION.*" ;; esac
echo "[check-env] $VENV: $TORCH_SPEC mmcv==$MMCV_VERSION mmengine==$MMENGINE_VERSION" \
     "mmdet==$MMDET_VERSION mmsegmentation==$MMSEG_VERSION"

mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
PIP="$VPY -m pip"
CONSTRAINTS="$VENV/check-env-constraints.txt"
{
  echo "$TORCH_SPEC"
  echo "mmcv==$MMCV_VERSION"
  echo "mmengine==$MMENGINE_VERSION"
  echo "mmdet==$MMDET_VERSION"
  echo "mmsegmentation==$MMSEG_VERSION"
} > "$CONSTRAINTS"
# torch wheels before 2.3 are built against NumPy 1.x and do not run with NumPy 2
if "$PY" -c "import sys; v = tuple(int(x) for x in sys.argv[1].split('.')[:2]); sys.exit(v >= (2, 3))" \
     "$TORCH_VERSION"; then
  echo "numpy<2" >> "$CONSTRAINTS"
fi

$PIP install -q --upgrade "pip<25"
TORCH_INDEX=()
[ -z "${TORCH_INDEX_URL:-}" ] || TORCH_INDEX=(--extra-index-url "$TORCH_INDEX_URL")
$PIP install -q -c "$CONSTRAINTS" "${TORCH_INDEX[@]}" torch
TORCH_INSTALLED=$("$VPY" -c "import torch; print(torch.__version__)")

# mmcv with ops, built against this torch (as for the tested venv: with a setuptools of mmcv's
# time; it is upgraded again below)
if ! "$VPY" -c "import sys, mmcv, mmcv.ops; sys.exit(mmcv.__version__ != sys.argv[1])" \
     "$MMCV_VERSION" 2>/dev/null; then
  $PIP install -q -c "$CONSTRAINTS" "setuptools<70" wheel ninja numpy packaging
  CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mmrecprune-check-env/torch-$TORCH_INSTALLED"
  echo "[check-env] building mmcv==$MMCV_VERSION with ops against torch $TORCH_INSTALLED" \
       "(12-25 minutes the first time; cached in $CACHE)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} $PIP install --cache-dir "$CACHE" -c "$CONSTRAINTS" \
    --no-build-isolation "mmcv==$MMCV_VERSION"
fi
# as in tools/setup_env.sh: a setuptools with pkg_resources (MMEngine's `mmdet::` configs) that
# torch >= 2.13 also accepts and that builds pyproject.toml's SPDX license (the packaging tests)
$PIP install -q -c "$CONSTRAINTS" "setuptools>=77.0.3,<80.9"
$PIP install -q -c "$CONSTRAINTS" "mmengine==$MMENGINE_VERSION" "mmdet==$MMDET_VERSION" \
  "mmsegmentation==$MMSEG_VERSION"
# what a user's `pip install -e .` resolves from the declared ranges (constrained to the minimums)
$PIP install -q -c "$CONSTRAINTS" -e ".[tests]"
$PIP check
"$VPY" -c "import torch, mmcv, mmcv.ops, mmengine, mmdet, mmseg, mmrecprune; print('[check-env] ok:', \
'torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmengine', mmengine.__version__, \
'mmdet', mmdet.__version__, 'mmseg', mmseg.__version__)"

if [ -n "${CHECK_ENV_SKIP_TESTS:-}" ]; then
  exit 0
fi
[ "$#" -gt 0 ] || set -- tests
exec "$VPY" -m pytest "$@"
