#!/usr/bin/env bash
# Creates .venv in the repository with every dependency mmrecprune needs (DESIGN.md recipe).
# Idempotent: a finished install leaves .venv/.mmrecprune-installed-v3 and is not redone (a venv
# with only an older stamp redoes the steps, which skip what is already installed).
# These exact versions are the tested point; pyproject.toml declares the ranges the package accepts.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STAMP="$VENV/.mmrecprune-installed-v3"
PY=${PYTHON:-python3}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && \
   [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte ]; then
  echo "[setup] installing Debian package dataset-fashion-mnist"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

if [ -f "$STAMP" ]; then
  echo "[setup] $VENV already complete"; exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade "pip<25" 
$PIP install -q torch==2.13.0
$PIP install -q wheel ninja numpy packaging
# mmcv with ops (NMS, RoIAlign) has no wheel for this torch: build it once; pip caches the wheel.
# It is built with a setuptools of its time (< 70, the combination known to build)...
if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
  $PIP install -q "setuptools<70"
  echo "[setup] building mmcv==2.1.0 with ops (about 12 minutes the first time, cached afterwards)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} $PIP install --no-build-isolation mmcv==2.1.0
fi
# ...and setuptools is then set to what the environment needs: torch 2.13 requires >= 77.0.3;
# MMEngine resolves `mmdet::` / `mmseg::` configs with pkg_resources, which 82 removed; from 80.9
# importing pkg_resources prints a UserWarning each time. Not inside the build step, so a venv
# whose mmcv is already there gets it too (and `pip check` below is clean).
$PIP install -q "setuptools>=77.0.3,<80.9"
$PIP install -q mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex \
  pycocotools matplotlib scipy terminaltables shapely pytest pytest-xdist
# the "deploy" extra (ONNX export), so its tests run too; not a dependency of the package
$PIP install -q "onnx>=1.17" "onnxscript>=0.6.1" "onnxruntime>=1.20"
$PIP install -q --no-deps --no-build-isolation -e .
$PIP check
"$VENV/bin/python" -c "import mmcv.ops, mmdet, mmseg, mmengine, mmrecprune; print('[setup] ok', mmcv.__version__, mmdet.__version__, mmseg.__version__)"
touch "$STAMP"
