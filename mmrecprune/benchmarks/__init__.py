"""The benchmark library: the stage runner every benchmark and the main job run their
``tools/train.py`` / ``tools/test.py`` stages with (:mod:`.stage_runner`), the downstream
probes they share (:mod:`.probe`), their statistics (:mod:`.stats`) and plots (:mod:`.plots`),
the operator profiles of the timing benchmarks (:mod:`.op_profile`), the C++ prototype of the
global prune they can time beside the package (:mod:`.compiled_prototypes`), and the leaderboard
(:mod:`.leaderboard`). The scripts in ``tools/benchmarks/`` are the entry
points. Nothing in :mod:`mmrecprune` imports this package: import it where it is used.
"""
