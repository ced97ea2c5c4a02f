"""Universal tickets against task-specific pruning, measured (issue 23, item 3).

    python tools/benchmarks/bench_routes.py [--flops 0.75 0.5] [--seeds 0 1 2] [--jobs 1]
        [--work-dir work_dirs/bench_routes] [--cfg-options KEY=VALUE ...] [--dry-run]
        [--report-only]

On the 64x64 scenes (the leaderboard's scenes probes: RetinaNet for 12 epochs, Semantic FPN for
1000 iterations, backbone fine-tuned), at equal backbone FLOPs removed, paired by seed:

* (a) the seeds' route: a PSAP or L1-uniform ticket pruned on classification (the
  leaderboard's structured run), then the probe fine-tuned on it;
* (b) in-task pruning: the dense probe model (the user's trained model: the probe on the dense
  classifier), then L1-uniform pruning in the probe's own config and schedule from its weights
  (``configs/intask/l1-uniform_*_probe_fashionscenes64.py``): as many detector iterations as (a);
* (c) post-training pruning of that dense model (L1, uniform, least-squares re-fit, 256
  calibration images, no training), and (c) + a fine-tune of a quarter of the iterations.

Every stage is an ordinary tools/*.py run, printed before it runs and reused when finished
(the leaderboard's finished stages too, read from ``--leaderboard-dir``), so an interrupted run
continues where it stopped. Writes ``routes.md``, ``routes.json`` and ``routes.png`` to
``--work-dir``: mean +- std, paired differences against (a) L1-uniform with wins, the wall time
of each route as a ratio to (a)'s, and the CPU speed-up of each whole slim model (timed last).
The library is ``mmrecprune/benchmarks/routes.py``; choices and results are in
``configs/intask/README.md``.
"""
from mmrecprune.benchmarks.routes import main
from mmrecprune.cli import run_tool

if __name__ == '__main__':
    run_tool(main)
