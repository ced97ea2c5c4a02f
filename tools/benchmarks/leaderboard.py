"""One leaderboard of every pruning method in the repo, at matched sparsity / FLOPs, over seeds.

    python tools/benchmarks/leaderboard.py [--scale default|smoke|faithful] [--seeds 0 1 2]
        [--scenes-levels 91.4 75] [--dry-run] [--report-only]

Unstructured methods are compared at the same overall sparsity (20 % of the remaining weights
per round: 7 / 11 / 14 rounds = 79.0 / 91.4 / 95.6 %), structured ones at the same fraction of
backbone FLOPs removed (-50 / -75 %; -77.1 % is the most that pruning the internal channels of
the residual blocks can remove), all on the embedded default (ResNet-18-w16, Fashion-MNIST):

* unstructured: ``recprune`` (decoder stage, then the RecPrune loop), ``recprune_pooled``
  (opt-in, not run unless named: RecPrune reconstructing the input average-pooled 2x,
  ``rec_downsample=2``, with a decoder stage of its own; against ``recprune``), ``imp``,
  ``imp_taylor`` (IMP's loop ranking weights by first-order Taylor saliency,
  ``configs/imp/imp-taylor_*``; against ``imp``, whose runs it brings along), ``random`` (IMP's
  ticket with random positions at its per-layer sparsity: the control), ``magnitude`` (one
  round of the IMP loop that prunes the whole level at once: what iterating buys), ``onthefly``
  (hyperspherical training with the gap penalty for that level, cut, no fine-tuning; trained from
  scratch on ``onthefly_images``) and ``rotnet`` (the self-supervised tickets of
  ``bench_selfsup.py``, read from its work dir where it has them: from scratch on 5000 images);
  the last two train networks of their own, so their baselines do too: ``magnitude_scratch``
  (one-shot magnitude pruning of a dense network trained as ``onthefly`` trains) and
  ``supervised_scratch`` (``bench_selfsup.py``'s supervised tickets of the same loop);
  ``nm`` (2:4 tickets: one round of the IMP loop under the 2:4 constraint,
  ``configs/nm/nm-2to4_r18-w16_1r-1e_fashionmnist.py``) at 50 %, against ``magnitude`` at 50 % (the
  same round pruning 50 % by global magnitude, unstructured);
* structured: ``psap``, ``l1_uniform``, ``l1_global`` and ``random_uniform`` (L1-uniform's
  widths, random channels: the control).

Every ticket gets the same two scores: **top-1 after re-training** with labels (the ticket's
weights and mask, mask fixed, ``retrain_epochs`` on ``retrain_images``: how lottery tickets are
used) and a **linear probe** (backbone frozen, BN in eval, only a linear head trains: the
features as they are). ``--scenes-levels`` adds the scenes probes at those levels: RetinaNet and
Semantic FPN, backbone fine-tuned and frozen (``frozen_stages=4``, ``norm_eval=True``), on the
64x64 probe scenes (``scenes=probe64``, the default and smoke scales) or the main job's 128x128
scenes and configs (``scenes=full``, the faithful scale). Kept parameters and FLOPs come from
each ticket; CPU latency (eager, batch 8, 56x56, 1 thread, interleaved with the dense backbone)
for structured tickets is measured last, with nothing else running in this benchmark.

Writes ``leaderboard.md``, ``leaderboard.json`` and ``leaderboard.png`` to ``--work-dir``: mean
+- std over seeds and, per method, the paired difference against its baseline (same seed,
same level) with its spread and how many seeds it wins. Stages are ordinary ``tools/train.py`` /
``tools/test.py`` runs, printed before they run and reused when finished, so an interrupted
leaderboard continues where it stopped, and any cell can be re-run by hand.

The library behind this entry point is ``mmrecprune/benchmarks/leaderboard/``.
"""
from mmrecprune.benchmarks.leaderboard import main
from mmrecprune.cli import run_tool

if __name__ == '__main__':
    run_tool(main)
