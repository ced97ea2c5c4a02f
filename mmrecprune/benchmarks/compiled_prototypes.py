"""The C++ prototype in ``tools/benchmarks/prototypes`` (issue 22), built and driven for
``bench_global_prune.py --compiled-prototype`` and its tests: :func:`prototype_prune`, the
global magnitude prune with its two passes over the weights in AVX2 loops
(``global_prune_avx2.cpp``), the package's sample and exact selection around them. It measures
how near hand-written kernels come to the prune's floor; the package does not use it (the
kernels the package ships, opt-in, are in :mod:`mmrecprune.ops`).

Built on first use as :mod:`mmrecprune.ops.build` builds the package's kernels (a C++ compiler
and ninja, an AVX2 CPU); :func:`build_prototype` raises ``RuntimeError`` with what is missing.
"""
import math
import os.path as osp

import numpy as np
import torch

from mmrecprune.ops import build_extension
from mmrecprune.sparsity import init_masks
from mmrecprune.sparsity.magnitude_selection import MagnitudeSelection

#: the folder of the prototypes' sources (in the repository, not in an installed wheel)
PROTOTYPES = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
                      'benchmarks', 'prototypes')


def build_prototype(filename):
    """The extension module built from ``PROTOTYPES/filename`` (cached by torch between runs).

    Raises:
        RuntimeError: the source is not in this checkout, or it cannot be built here.
    """
    source = osp.join(PROTOTYPES, filename)
    if not osp.isfile(source):
        raise RuntimeError(f'{source} not found: the prototypes run from a clone of the '
                           'repository, not from an installed wheel')
    return build_extension(source)


def prototype_bracket(layers, ratio):
    """``(k, lo, hi)`` of the prototype's prune of ``ratio`` of ``layers`` (a
    :class:`~mmrecprune.sparsity.magnitude_selection.MagnitudeSelection`): how many to prune
    and the package's sampled bracket of the k-th smallest magnitude, as floats, an open side
    as ``0.0`` (nothing is below) or ``inf``."""
    k = int(round(ratio * layers.n_surviving))
    if k == 0:
        raise ValueError(f'ratio {ratio} prunes nothing of {layers.n_surviving} weights')
    lo, hi = layers._bracket(k)
    return (k, 0.0 if lo is None else float(lo), math.inf if hi is None else float(hi))


def prototype_prune(kernels, params, ratio):
    """Ours with the two passes in C++ (``kernels``, the built prototype), from all weights
    surviving: the package's sample brackets the k-th smallest magnitude, pass 1 counts what
    lies below the band and collects the band, the exact threshold comes from the band, pass 2
    writes the masks and zeroes the pruned weights, and the last tied entries that the exact
    count keeps are put back. Below the package's sampling size the band is every weight. None
    if the sample's bracket misses the threshold (the package then runs its pass again).

    Args:
        kernels: The module :func:`build_prototype` built from ``global_prune_avx2.cpp``.
        params (dict[str, Tensor]): Contiguous float32 CPU weights (finite), pruned in place.
        ratio (float): Fraction of the weights to prune, in ``(0, 1)``.

    Returns:
        dict[str, BoolTensor] | None: The masks, as ``global_magnitude_masks`` gives them.
    """
    masks = init_masks(params)
    k, lo, hi = prototype_bracket(MagnitudeSelection(params, masks), ratio)
    flat = [p.detach().view(-1) for p in params.values()]
    scans = [kernels.count_band(w, lo, hi) for w in flat]
    selected = _band_threshold(scans, k)
    if selected is None:
        return None
    threshold, excess = selected
    for w, mask in zip(flat, masks.values()):
        kernels.prune_at(w, mask.view(-1), float(threshold))
    _restore_ties(flat, masks, scans, threshold, excess)
    return masks


def _band_threshold(scans, k):
    """The exact threshold (the k-th smallest magnitude) from the scans' counts below the band
    and the bands, and how many entries at or below it are one too many (ties); None where the
    band misses it."""
    below = sum(int(scan[0]) for scan in scans)
    band = np.abs(np.concatenate([scan[2].numpy() for scan in scans]))
    if not below < k <= below + band.size:
        return None
    threshold = np.partition(band, k - below - 1)[k - below - 1]
    return threshold, below + int(np.count_nonzero(band <= threshold)) - k


def _restore_ties(flat, masks, scans, threshold, excess):
    """Put back the last ``excess`` entries tied at ``threshold`` (from the band's signed
    values), layers and entries from the end: the package's rule for ties."""
    for w, mask, (_, index, value) in zip(reversed(flat), reversed(list(masks.values())),
                                          reversed(scans)):
        if excess <= 0:
            break
        tied = (value.abs() == threshold).nonzero().view(-1)[-excess:]
        w[index[tied]] = value[tied]
        mask.view(-1)[index[tied]] = True
        excess -= tied.numel()


def prototype_prune_one_pass(kernels, params, ratio):
    """:func:`prototype_prune` with one pass over the weights instead of two: the pass prunes
    what lies below the sample's bracket, keeps the band and collects it; the exact threshold
    comes from the band, and the band's entries at or below it are pruned by index. The same
    masks and pruned weights. It needs the bracket to hold: where the band's lower edge lies
    above the threshold (the sample over-estimated it), entries that should be kept are
    already zeroed, so this returns None with ``params`` changed (the caller keeps a copy; the
    package would need the two-pass form, or a copy of what it zeroes, for that case).
    """
    masks = {name: torch.empty(p.shape, dtype=torch.bool) for name, p in params.items()}
    k, lo, hi = prototype_bracket(MagnitudeSelection(params, init_masks(params)), ratio)
    flat = [p.detach().view(-1) for p in params.values()]
    scans = [kernels.prune_band(w, m.view(-1), lo, hi) for w, m in zip(flat, masks.values())]
    selected = _band_threshold(scans, k)
    if selected is None:
        return None
    threshold, excess = selected
    for w, mask, (_, index, value) in zip(flat, masks.values(), scans):
        pruned = index[value.abs() <= float(threshold)]
        w[pruned] = 0.0
        mask.view(-1)[pruned] = False
    _restore_ties(flat, masks, scans, threshold, excess)
    return masks
