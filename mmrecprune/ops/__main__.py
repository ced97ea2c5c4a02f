"""``python -m mmrecprune.ops``: build the compiled kernels now (into torch's extension cache)
and check them against eager PyTorch (the on-the-fly kernels on random conv weights, the mask
kernels' masks and zeroing on random weights); exits 1, saying what is missing, where they
cannot be built. Run it once ahead of ``dist_train.sh`` so that the ranks load the cached
build instead of waiting for the first to compile it."""
import sys
import time

import torch

from mmrecprune.ops import OpsUnavailable, eager_agreement, mask_functions, onthefly_functions
from mmrecprune.sparsity import (apply_masks, global_magnitude_masks, init_masks,
                                 target_thresholds)


def masks_agree(functions):
    """Whether the mask kernels give eager's global masks (over 2**20 weights: the sampled
    bracket) and zeroed weights, bit for bit."""
    g = torch.Generator().manual_seed(1)
    params = {f'w{i}': torch.randn(shape, generator=g) * 0.05
              for i, shape in enumerate(((256, 256, 3, 3), (512, 128, 3, 3), (64, 3, 1, 1)))}
    masks = init_masks(params)
    same = True
    for _ in range(2):  # a round from dense, then one on the survivors
        eager = global_magnitude_masks(params, masks, 0.2)
        same &= all(torch.equal(m, eager[n]) for n, m in global_magnitude_masks(
            params, masks, 0.2, functions=functions).items())
        zeroed = {n: p.clone() for n, p in params.items()}
        apply_masks(zeroed, eager, functions=functions)
        apply_masks(params, eager)
        same &= all(torch.equal(zeroed[n], p) for n, p in params.items())
        masks = eager
    return same


def main():
    start = time.perf_counter()
    try:
        functions = onthefly_functions()
        masks = mask_functions()
    except OpsUnavailable as error:
        print(f'mmrecprune.ops: the compiled kernels cannot be built here: {error}. '
              'Without them, compiled_ops=False (the default of OnTheFlyPruner and '
              'IterativeMagnitudePruner) runs the same in eager PyTorch.')
        return 1
    print(f'mmrecprune.ops: onthefly and masks kernels ready '
          f'({time.perf_counter() - start:.1f} s)')
    # (not seed 0: eager_agreement draws its upstream gradient with it, and an upstream equal
    # to the weights has a zero gradient, whose relative differences are all rounding)
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(o, c, 3, 3, generator=g) for o, c in ((16, 3), (32, 16), (8, 32))]
    agreement = eager_agreement(functions, weights, target_thresholds(weights, 0.5), 0.5)
    print('onthefly against eager PyTorch (largest relative difference): '
          + ', '.join(f'{k.replace("_", " ")} {v:.1e}' for k, v in agreement.items()))
    same_masks = masks_agree(masks)
    print(f'masks against eager PyTorch: global masks and zeroed weights '
          f'{"equal, bit for bit" if same_masks else "DIFFER"}')
    if max(agreement.values()) > 1e-5 or not same_masks:
        print('mmrecprune.ops: the kernels do not compute what eager PyTorch does; do not use '
              'compiled_ops=True here')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
