"""The GPU check (issue 24): AMP and DDP on a GPU, slim and 2:4 tickets' latency, one JSON and
one PNG. What it runs: ``mmrecprune/analysis/gpu_check/``. On a bare GPU machine run
``tools/benchmarks/gpu_check.sh``, which installs the packages first.

Example::

    python tools/benchmarks/gpu_check.py --out-dir $OUT
    python tools/benchmarks/gpu_check.py --device cpu --dtype float32 --sections slim \\
        --depth 18 --input-size 32 --batch-sizes 1 --modes eager --repeats 3
"""
from mmrecprune.analysis.gpu_check import main
from mmrecprune.cli import run_tool

if __name__ == '__main__':
    run_tool(main)
