#!/usr/bin/env bash
# The GPU check of issue 24 on a bare GPU machine, in at most 8 minutes: installs mmengine,
# mmcv, mmdet (and Torch-Pruning where its wheel is there), then runs
# tools/benchmarks/gpu_check.py: AMP (fp16 / bf16) ticket training and a ticket RetinaNet step,
# a 1-process NCCL dist_train.sh run, dense vs slim vs Torch-Pruning ResNet-50 latency, and a
# 2:4 ticket dense vs semi-structured sparse. Writes $OUT/gpu_check.json and gpu_check.png.
#
#   bash tools/benchmarks/gpu_check.sh [gpu_check.py args]   # on the GPU machine
#   bash tools/benchmarks/gpu_check.sh download [DIR]        # where PyPI is reachable: the
#                                                             # files for a machine without it
#
# Packages come from $GPU_CHECK_WHEELS (default .whl, what `download` fetches: wheels for
# CPython 3.12 on x86-64 Linux and mmcv's sdist) when that folder exists, else from PyPI. They
# go to $GPU_CHECK_SITE (default /tmp/gpu_check_site, put on PYTHONPATH), never over the
# machine's own torch / numpy. mmcv 2.1.0 has no wheel for current torch: its sdist is built
# with MMCV_WITH_OPS=0 (no C++ / CUDA compile, seconds; its Python sources are copied if that
# build fails, which is all such a build does). mmdet imports mmcv.ops, whose
# compiled _ext is then missing: a stub _ext is written whose ops raise when called (the checks
# call none but the focal loss, which gpu_check.py swaps for mmdet's PyTorch version). The
# package itself runs from this checkout (PYTHONPATH), as tools/dist_train.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
OUT=${OUT:-work_dirs/gpu_check}
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}   # the whole script, installs included
START=$(date +%s)
# name==version, one a line: the pure-Python wheels and the binary ones for CPython 3.12
PURE="mmengine==0.10.7 mmdet==3.3.0 addict==2.4.0 yapf==0.43.0 platformdirs==4.14.9
termcolor==3.3.0 terminaltables==3.1.10 torch-pruning==1.6.0"
BINARY="pycocotools==2.0.11 shapely==2.2.0"

if [ "${1:-}" = download ]; then
    DIR=${2:-.whl}
    mkdir -p "$DIR"
    for spec in $PURE $BINARY; do
        $PYTHON -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DIR" "$spec"
    done
    # mmcv: its sdist. pip prepares its metadata in an isolated build env without torch (mmcv's
    # setup.py then skips the ops), whose setuptools must still ship pkg_resources (< 82)
    echo 'setuptools<82' > "$DIR/.build-constraints.txt"
    PIP_CONSTRAINT="$DIR/.build-constraints.txt" $PYTHON -m pip download -q --no-deps \
        --no-binary=:all: -d "$DIR" mmcv==2.1.0
    rm "$DIR/.build-constraints.txt"
    ls -la "$DIR"
    exit 0
fi

echo "[gpu_check.sh] $($PYTHON -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")')"
mkdir -p "$SITE" "$OUT"
if [ -d "$WHEELS" ]; then
    FROM=(--no-index --find-links "$WHEELS")
    WHEEL_FILES=$(ls "$WHEELS"/*.whl)
    # shellcheck disable=SC2086
    $PYTHON -m pip install -q --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        $WHEEL_FILES
    MMCV=$(ls "$WHEELS"/mmcv-2.1.0*.tar.gz 2>/dev/null | head -1)
else
    FROM=()
    # shellcheck disable=SC2086
    $PYTHON -m pip install -q --no-deps --no-compile --upgrade --target "$SITE" $PURE $BINARY \
        || echo "[gpu_check.sh] some packages did not install (Torch-Pruning is optional)"
    MMCV=mmcv==2.1.0
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! $PYTHON -c 'import mmcv' 2>/dev/null; then
    if ! MMCV_WITH_OPS=0 $PYTHON -m pip install -q --no-deps --no-build-isolation \
            --no-compile "${FROM[@]}" --target "$SITE" "$MMCV"; then
        # mmcv's setup.py imports pkg_resources, which setuptools >= 82 no longer has; without
        # ops the build only copies the Python sources, so copy them
        echo "[gpu_check.sh] mmcv did not build; its Python sources are copied instead"
        rm -rf /tmp/gpu_check_mmcv && mkdir -p /tmp/gpu_check_mmcv
        tar -xzf "$MMCV" -C /tmp/gpu_check_mmcv
        cp -r /tmp/gpu_check_mmcv/mmcv-*/mmcv "$SITE/"
    fi
fi
if ! $PYTHON -c 'import mmcv.ops' 2>/dev/null; then
    cat > "$SITE/mmcv/_ext.py" <<'PY'
"""Written by tools/benchmarks/gpu_check.sh: mmcv was built with MMCV_WITH_OPS=0, so its compiled
ops are missing. Any op looked up here exists (mmcv.ops imports) and raises when called."""
GPU_CHECK_STUB = True


def __getattr__(name):
    def missing(*args, **kwargs):
        raise RuntimeError(f'mmcv op {name} is not available: mmcv was built with '
                           'MMCV_WITH_OPS=0 (tools/benchmarks/gpu_check.sh)')
    return missing
PY
    echo "[gpu_check.sh] mmcv without ops: stub mmcv._ext written"
fi
$PYTHON -c 'import mmengine, mmcv, mmdet.models, mmrecprune; print("[gpu_check.sh] mmengine", mmengine.__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__)'
LEFT=$(( BUDGET_S - ($(date +%s) - START) - 15 ))
echo "[gpu_check.sh] installed in $(( $(date +%s) - START )) s; ${LEFT} s left for the checks"
PYTHONUNBUFFERED=1 $PYTHON tools/benchmarks/gpu_check.py --out-dir "$OUT" --budget-s "$LEFT" \
    "$@"
