"""``python -m mmrecprune.ops``: build the compiled kernels now (into torch's extension cache)
and check them against eager PyTorch on random conv weights; exits 1, saying what is missing,
where they cannot be built. Run it once ahead of ``dist_train.sh`` so that the ranks load the
cached build instead of waiting for the first to compile it."""
import sys
import time

import torch

from mmrecprune.ops import OpsUnavailable, eager_agreement, onthefly_functions
from mmrecprune.sparsity.gap_penalty import target_thresholds


def main():
    start = time.perf_counter()
    try:
        functions = onthefly_functions()
    except OpsUnavailable as error:
        print(f'mmrecprune.ops: the compiled kernels cannot be built here: {error}. '
              'Without them, OnTheFlyPruner(compiled_ops=False) runs the same in eager PyTorch.')
        return 1
    print(f'mmrecprune.ops: onthefly kernels ready ({time.perf_counter() - start:.1f} s)')
    # (not seed 0: eager_agreement draws its upstream gradient with it, and an upstream equal
    # to the weights has a zero gradient, whose relative differences are all rounding)
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(o, c, 3, 3, generator=g) for o, c in ((16, 3), (32, 16), (8, 32))]
    agreement = eager_agreement(functions, weights, target_thresholds(weights, 0.5), 0.5)
    print('against eager PyTorch (largest relative difference): '
          + ', '.join(f'{k.replace("_", " ")} {v:.1e}' for k, v in agreement.items()))
    if max(agreement.values()) > 1e-5:
        print('mmrecprune.ops: the kernels do not compute what eager PyTorch does; do not use '
              'compiled_ops=True here')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
