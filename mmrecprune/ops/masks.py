"""Unstructured masks' weight work in C++ (``csrc/masks.cpp``): zeroing the pruned entries of
all masked tensors in one call (what :class:`~mmrecprune.sparsity.WeightMasks` runs on the
gradients before every optimizer step and on the weights after it, and
:func:`~mmrecprune.sparsity.apply_masks`), and the one pass of the global magnitude selection
(:class:`~mmrecprune.sparsity.magnitude_selection.MagnitudeSelection`: write a weight's new
mask, count what it keeps, collect the band around the threshold).

Why: eager PyTorch zeroes through an int32 copy of every mask (one ``bitwise_and_`` per tensor:
four bytes of mask read per entry, and a dispatch per tensor), and the selection's pass runs as
half a dozen NumPy passes over L2-sized chunks; the kernels read each entry and its one-byte
mask once. The results are the same bits (tests/ops/test_masks.py): the selection is exact,
so the masks a pruner makes with them equal the eager ones. Computed for contiguous float32 CPU
tensors (``zero_pruned``: any 4-byte dtype) with contiguous bool masks; any other call runs the
package's eager code.
"""
from typing import Callable, NamedTuple

import torch

from .build import build_extension


class MaskFunctions(NamedTuple):
    """The kernels behind the package's mask enforcement and magnitude selection (each returns
    None where it does not apply, and the caller runs its eager code)."""
    zero_pruned: Callable  # (tensors, masks) -> True, or None where it does not apply
    magnitude_scan: Callable  # (weight, keep, out, lo, hi) -> (kept, index, magnitudes) | None


_KERNELS = []


def _kernels():
    if not _KERNELS:
        _KERNELS.append(build_extension('masks.cpp'))
    return _KERNELS[0]


def _flat_mask_applies(mask, numel):
    return (mask.device.type == 'cpu' and mask.dtype == torch.bool and mask.is_contiguous()
            and mask.numel() == numel)


# module-level, so that what holds them (WeightMasks) still pickles
def _zero_pruned(tensors, masks):
    """``tensors[i]`` = +0 where ``masks[i]`` is False, all in one call; None (nothing done)
    unless every tensor is a contiguous CPU tensor of a 4-byte dtype and its mask a contiguous
    bool CPU tensor of its size."""
    tensors, masks = list(tensors), list(masks)
    if not all(t.device.type == 'cpu' and t.element_size() == 4 and t.is_contiguous()
               and _flat_mask_applies(m, t.numel()) for t, m in zip(tensors, masks)):
        return None
    _kernels().zero_pruned_(tensors, masks)
    return True


def _magnitude_scan(weight, keep, out, lo, hi):
    """``MagnitudeSelection._scan`` on flat tensors: write ``keep & (|weight| >= lo)`` into
    ``out``; return how many entries it keeps and the positions and magnitudes (NumPy) of those
    also ``<= hi`` (``keep`` None: all kept; ``lo`` / ``hi`` None: open). None unless the weight
    is contiguous float32 on the CPU and the masks contiguous bool CPU tensors of its size."""
    n = weight.numel()
    if not (weight.device.type == 'cpu' and weight.dtype == torch.float32
            and weight.is_contiguous() and _flat_mask_applies(out, n)
            and (keep is None or _flat_mask_applies(keep, n))):
        return None
    kept, index, magnitudes = _kernels().magnitude_scan(
        weight, keep, out, lo is not None, 0.0 if lo is None else float(lo), hi is not None,
        0.0 if hi is None else float(hi))
    return kept, index.numpy(), magnitudes.numpy()


def mask_functions():
    """The kernels' :class:`MaskFunctions`, built on first use (so that a missing compiler is
    reported here, before training).

    Raises:
        OpsUnavailable: the kernels cannot be built here (the message says why).
    """
    _kernels()
    return MaskFunctions(_zero_pruned, _magnitude_scan)
