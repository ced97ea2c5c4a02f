"""The C++ prototypes in ``tools/benchmarks/prototypes`` (issue 22's option (a): kernels
compiled at install time), built and driven for the benchmarks' ``--compiled-prototype``
options and their tests.

They measure how near hand-written kernels come to the targets that eager PyTorch misses; the
package does not use them:

* :func:`prototype_prune`: the global magnitude prune with its two passes over the weights in
  AVX2 loops (``global_prune_avx2.cpp``), the package's sample and exact selection around them;
* :func:`prototype_functions` / :func:`swapped_in`: the hyperspherical normalisation, its
  backward and the gap penalty, one C++ call each over all convs (``onthefly_fused.cpp``), in
  place of the package's autograd functions while a block runs.

Built on first use with ``torch.utils.cpp_extension`` (a C++ compiler and ninja, as an MMCV
build needs) into torch's extension cache, and only for CPUs with AVX2.
:func:`build_prototype` raises ``RuntimeError`` with what is missing; :func:`prototype_agreement`
compares the on-the-fly prototype with the package.
"""
import contextlib
import importlib
import math
import os
import os.path as osp
import shutil

import numpy as np
import torch

from mmrecprune.sparsity import init_masks
from mmrecprune.sparsity.magnitude_selection import MagnitudeSelection

#: the folder of the prototypes' sources (in the repository, not in an installed wheel)
PROTOTYPES = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
                      'benchmarks', 'prototypes')


def build_prototype(filename):
    """The extension module built from ``PROTOTYPES/filename`` with AVX2 code (cached by torch
    between runs)."""
    source = osp.join(PROTOTYPES, filename)
    if not osp.isfile(source):
        raise RuntimeError(f'{source} not found: the prototypes run from a clone of the '
                           'repository, not from an installed wheel')
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ('AVX2', 'AVX512'):
        raise RuntimeError(f'the prototypes are AVX2 code; this CPU has {capability}')
    from torch.utils.cpp_extension import is_ninja_available, load
    compiler = os.environ.get('CXX', 'c++')
    if shutil.which(compiler) is None:
        raise RuntimeError(f'no C++ compiler ({compiler!r} is not on PATH; set CXX)')
    if not is_ninja_available():
        raise RuntimeError('ninja is not installed (pip install ninja)')
    name = 'mmrecprune_' + osp.splitext(filename)[0]
    return load(name, [source], extra_cflags=['-O3', '-mavx2', '-mfma', '-fopenmp-simd'],
                verbose=False)


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
    below = sum(int(scan[0]) for scan in scans)
    band = np.abs(np.concatenate([scan[2].numpy() for scan in scans]))
    if not below < k <= below + band.size:
        return None
    threshold = np.partition(band, k - below - 1)[k - below - 1]
    for w, mask in zip(flat, masks.values()):
        kernels.prune_at(w, mask.view(-1), float(threshold))
    excess = below + int(np.count_nonzero(band <= threshold)) - k
    for w, mask, (_, index, value) in zip(reversed(flat), reversed(list(masks.values())),
                                          reversed(scans)):
        if excess <= 0:
            break
        tied = (value.abs() == threshold).nonzero().view(-1)[-excess:]
        w[index[tied]] = value[tied]
        mask.view(-1)[index[tied]] = True
        excess -= tied.numel()
    return masks


# the modules whose autograd functions swapped_in replaces (mmrecprune.sparsity re-exports a
# function named gap_penalty, so the modules are looked up by their full names)
_HYPERSPHERICAL = importlib.import_module('mmrecprune.sparsity.hyperspherical')
_GAP_PENALTY = importlib.import_module('mmrecprune.sparsity.gap_penalty')


def prototype_functions(kernels):
    """Autograd functions with the signatures of the package's ``_UnitFilterList`` and
    ``_GapPenalty``, computed by the C++ prototype ``kernels`` (onthefly_fused.cpp). The unit
    filters' function mirrors the package's protocol (the graph it marks consumed, no gradient
    materialised for an unused unit) with its own saved tensors: one inverse-norm vector for
    all filters instead of one per weight."""

    class UnitFilterList(torch.autograd.Function):

        @staticmethod
        def forward(ctx, graph, *weights):
            *units, inverse, live = kernels.unit_forward(list(weights))
            ctx.graph = graph
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(*units, inverse, live)
            return tuple(units)

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, *grads):
            if ctx.graph is not None:
                ctx.graph.consumed = True
            *units, inverse, live = ctx.saved_tensors
            return (None, *kernels.unit_backward(list(grads), units, inverse, live))

    class GapPenalty(_GAP_PENALTY._GapPenalty):
        # the package's backward (it scales the saved gradient); the forward in C++

        @staticmethod
        def forward(ctx, borders, margin, *units):
            penalty, *directions = kernels.penalty_forward(list(units),
                                                           [float(b) for b in borders], margin)
            ctx.save_for_backward(*directions)
            return penalty

    return UnitFilterList, GapPenalty


@contextlib.contextmanager
def swapped_in(functions):
    """The package's normalisation and penalty computed by ``functions`` (from
    :func:`prototype_functions`) inside the block; nothing swapped for None."""
    if functions is None:
        yield
        return
    saved = _HYPERSPHERICAL._UnitFilterList, _GAP_PENALTY._GapPenalty
    _HYPERSPHERICAL._UnitFilterList, _GAP_PENALTY._GapPenalty = functions
    try:
        yield
    finally:
        _HYPERSPHERICAL._UnitFilterList, _GAP_PENALTY._GapPenalty = saved


def _relative(a, b):
    return float((a - b).norm() / a.norm().clamp_min(1e-30))


def prototype_agreement(functions, weights, thresholds, margin, seed=0):
    """How closely the prototype's ``functions`` compute what the package does, on
    ``weights`` (conv weights; not modified): the largest relative difference (norm of the
    difference over the norm, worst layer) of the unit filters, of the weights' gradients
    through them from a random upstream gradient, of the gap penalty and of its gradient by
    the unit filters. The penalty's two sides run on the same unit filters (the package's):
    its target sets are a comparison with a border, which a one-ulp difference in a unit
    filter can flip for the entry at the border.

    Returns:
        dict[str, float]: ``units``, ``weight_grads``, ``penalty``, ``penalty_grads``.
    """
    g = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in weights]
    units_of, weight_grads, penalties, penalty_grads = [], [], [], []
    shared_units = None
    for fns in (None, functions):
        leaves = [w.detach().clone().requires_grad_() for w in weights]
        with swapped_in(fns):
            units = _HYPERSPHERICAL.unit_filter_list(leaves)
            sum((u * up).sum() for u, up in zip(units, upstream)).backward()
            if shared_units is None:
                shared_units = [u.detach() for u in units]
            given = [u.clone().requires_grad_() for u in shared_units]
            penalty = _GAP_PENALTY.gap_penalty(leaves, thresholds, margin, units=given)
            penalty.backward()
        units_of.append([u.detach() for u in units])
        weight_grads.append([w.grad for w in leaves])
        penalties.append(penalty.detach())
        penalty_grads.append([u.grad for u in given])
    return dict(
        units=max(map(_relative, *units_of)),
        weight_grads=max(map(_relative, *weight_grads)),
        penalty=_relative(penalties[0].reshape(1), penalties[1].reshape(1)),
        penalty_grads=max(map(_relative, *penalty_grads)))
