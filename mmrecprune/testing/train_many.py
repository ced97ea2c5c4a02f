"""Several ``tools/train.py`` runs in one (distributed) launch, one after another.

``python -m torch.distributed.run --nproc_per_node 2 -m mmrecprune.testing.train_many PLAN``
runs each entry of the JSON file ``PLAN``, a list of
``{"name": ..., "argv": [train.py arguments], "hand_over": [[made, wanted], ...]}``, through
:func:`mmrecprune.training.main` (the code of ``tools/train.py``) in the same processes and
process group. After an entry, rank 0 copies each file ``made`` to ``wanted`` (where the next
configs look for it). Each entry's output lies between ``=== begin NAME ===`` and
``=== end NAME ===`` lines on stdout. The first failure prints its traceback and ends every
process with status 1, so the entries after it do not run.

Why: the full-size config test trains 15 configs at 2 iterations each; starting Python,
PyTorch and OpenMMLab once per process instead of once per config saves about half of it.
"""
import gc
import json
import os
import shutil
import sys
import traceback


def run_plan(plan):
    import torch.distributed as dist

    from mmrecprune.training import main
    for entry in plan:
        name = entry['name']
        print(f'=== begin {name} ===', flush=True)
        try:
            main(entry['argv'], keep_process_group=True)
            gc.collect()  # runners sit in reference cycles; free their models now
        except BaseException:  # noqa: BLE001  the other rank may hang in a collective: stop all
            traceback.print_exc()
            print(f'=== failed {name} ===', flush=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        if dist.is_initialized():
            dist.barrier()
        if not dist.is_initialized() or dist.get_rank() == 0:
            for made, wanted in entry.get('hand_over', ()):
                os.makedirs(os.path.dirname(wanted) or '.', exist_ok=True)
                shutil.copy(made, wanted)
        if dist.is_initialized():
            dist.barrier()
        print(f'=== end {name} ===', flush=True)
    from mmrecprune.distributed import teardown_distributed
    teardown_distributed()


if __name__ == '__main__':
    with open(sys.argv[1]) as f:
        run_plan(json.load(f))
