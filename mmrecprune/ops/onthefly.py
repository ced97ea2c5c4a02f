"""On-the-fly pruning's per-step weight work in C++ (``csrc/onthefly.cpp``): the unit filters
of every hyperspherical conv and the gap penalty in one autograd node (the forward reads each
filter once; the backward adds the penalty's gradient to the convs' and projects both in one
pass), and drop-ins for the eager autograd functions of
:mod:`mmrecprune.sparsity.hyperspherical` (``_UnitFilterList``: the same node with no weight
penalised) and :mod:`mmrecprune.sparsity.gap_penalty` (``_GapPenalty``), for the calls that
do not go through the one node.

Why: at the embedded default's sizes (ResNet-18 at width 16) a step's 20 conv weights are
small, and eager PyTorch's cost is the dispatch of each of the dozen operations per weight, not
the arithmetic; the C++ loops normalise each filter while it sits in L1 and sum the penalty in
AVX2 lanes. Measured: on-the-fly step / plain step 1.16 eager, 1.04 with these
(configs/onthefly/README.md). The values agree with the eager functions to float rounding
(tests/ops/test_onthefly.py); they are computed for contiguous float32 CPU tensors only, and
any other call (CUDA, half precision) runs the eager function.
"""
from typing import Callable, NamedTuple

import torch

from mmrecprune.sparsity.gap_penalty import _GapPenalty, gap_penalty
from mmrecprune.sparsity.hyperspherical import _UnitFilterList, unit_filter_list

from .build import build_extension


def compiled_applies(tensors):
    """Whether the kernels take ``tensors``: non-empty contiguous float32 CPU tensors of >= 2
    dims."""
    return all(t.device.type == 'cpu' and t.dtype == torch.float32 and t.is_contiguous()
               and t.dim() >= 2 and t.numel() > 0 for t in tensors)


class OnTheFlyFunctions(NamedTuple):
    """Drop-ins for the ``apply`` of the package's two autograd functions (same arguments,
    same results), each computed by the kernels where :func:`compiled_applies`, and by the
    package's eager function otherwise; and both in one node, where the kernels apply (or
    None: :class:`~mmrecprune.sparsity.hyperspherical.SharedUnitFilters` then calls the two)."""
    unit_filters: Callable  # (graph, *weights) -> unit filters
    gap_penalty: Callable  # (borders, margin, *units) -> penalty
    # (graph, borders, margin, *weights) -> (*unit filters, penalty) or None; borders: one
    # per weight, NaN where the weight is not penalised
    units_and_penalty: Callable = None


def _autograd_functions(kernels):

    class CompiledGapPenalty(_GapPenalty):
        """``_GapPenalty`` with the forward (penalty and gradient direction) in C++; the
        backward, which scales the saved direction, is the package's."""

        @staticmethod
        def forward(ctx, borders, margin, *units):
            penalty, *directions = kernels.penalty_forward(
                list(units), borders.to(torch.float32).contiguous(), float(margin))
            ctx.save_for_backward(*directions)
            return penalty

    class CompiledUnitsAndPenalty(torch.autograd.Function):
        """The unit filters of all ``weights`` and the gap penalty of those whose border is
        not NaN, one node: the forward reads each filter once, and the backward adds the
        penalty's gradient to the convs' and projects both in one pass (no penalty node, no
        stored penalty gradient, no sum of two gradients per conv)."""

        @staticmethod
        def forward(ctx, graph, borders, margin, *weights):
            *units, inverse, live, factors, penalty = kernels.fused_forward(
                list(weights), borders, float(margin))
            ctx.graph, ctx.margin = graph, float(margin)
            ctx.set_materialize_grads(False)  # an unused output (conv not run) gets no gradient
            # a frozen weight's unit filters take no gradient (its conv computes none for them)
            frozen = [not needed for needed in ctx.needs_input_grad[3:]]
            ctx.mark_non_differentiable(*(u for u, f in zip(units, frozen) if f))
            ctx.save_for_backward(*units, inverse, live, factors,
                                  borders.masked_fill(torch.tensor(frozen), float('nan')))
            return (*units, penalty)

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, *grads):
            if ctx.graph is not None:
                ctx.graph.consumed = True
            # (borders NaN where frozen: the kernel computes nothing for those weights)
            *units, inverse, live, factors, borders = ctx.saved_tensors
            *unit_grads, penalty_grad = grads
            return (None, None, None, *kernels.fused_backward(
                list(unit_grads), penalty_grad, units, inverse, live, factors, borders,
                ctx.margin))

    return CompiledGapPenalty, CompiledUnitsAndPenalty


_AUTOGRAD = []  # the two compiled autograd functions, once built


def _compiled():
    if not _AUTOGRAD:
        _AUTOGRAD.extend(_autograd_functions(build_extension('onthefly.cpp')))
    return _AUTOGRAD


# module-level, so a model holding them (SharedUnitFilters' hooks) still pickles
def _unit_filters(graph, *weights):
    if not compiled_applies(weights):
        return _UnitFilterList.apply(graph, *weights)
    # the one node with no weight penalised (its penalty output, 0, gets no gradient)
    no_borders = torch.full((len(weights), ), float('nan'))
    return _compiled()[1].apply(graph, no_borders, 0.0, *weights)[:-1]


def _gap_penalty(borders, margin, *units):
    function = _compiled()[0] if compiled_applies(units) else _GapPenalty
    return function.apply(borders, margin, *units)


def _units_and_penalty(graph, borders, margin, *weights):
    if not compiled_applies(weights):
        return None
    return _compiled()[1].apply(graph, borders.to(torch.float32).contiguous(), margin,
                                *weights)


def onthefly_functions():
    """The kernels' :class:`OnTheFlyFunctions`, built on first use (so that a missing compiler
    is reported here, before training, and not at the first step).

    Raises:
        OpsUnavailable: the kernels cannot be built here (the message says why).
    """
    _compiled()
    return OnTheFlyFunctions(_unit_filters, _gap_penalty, _units_and_penalty)


def _relative(a, b):
    return float((a - b).norm() / a.norm().clamp_min(1e-30))


def eager_agreement(functions, weights, thresholds, margin, seed=0):
    """How closely ``functions`` (:func:`onthefly_functions`) compute what eager PyTorch does
    on ``weights`` (conv weights; not modified): the largest relative difference (norm of the
    difference over the norm, worst layer) of the unit filters, of the weights' gradients
    through them from a random upstream gradient, of the gap penalty and of its gradient by
    the unit filters. The penalty's two sides run on the same (eager) unit filters: its target
    sets are a comparison with a border, which a one-ulp difference in a unit filter can flip
    for the entry at the border (a discontinuity, not an error).

    Where ``functions`` compute both in one node (``units_and_penalty``), also that node's
    penalty and the weights' gradients from the upstream gradient plus the penalty's, against
    eager's, on borders moved 1e-5 off the entries (so no entry sits on one).

    Returns:
        dict[str, float]: ``units``, ``weight_grads``, ``penalty``, ``penalty_grads`` and,
        with one node, ``fused_penalty`` and ``fused_weight_grads``.
    """
    g = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in weights]
    units_of, weight_grads, penalties, penalty_grads = [], [], [], []
    shared_units = None
    for fns in (None, functions):
        leaves = [w.detach().clone().requires_grad_() for w in weights]
        units = unit_filter_list(leaves, functions=fns)
        sum((u * up).sum() for u, up in zip(units, upstream)).backward()
        if shared_units is None:
            shared_units = [u.detach() for u in units]
        given = [u.clone().requires_grad_() for u in shared_units]
        penalty = gap_penalty(leaves, thresholds, margin, units=given, functions=fns)
        penalty.backward()
        units_of.append([u.detach() for u in units])
        weight_grads.append([w.grad for w in leaves])
        penalties.append(penalty.detach())
        penalty_grads.append([u.grad for u in given])
    out = dict(
        units=max(map(_relative, *units_of)),
        weight_grads=max(map(_relative, *weight_grads)),
        penalty=_relative(penalties[0].reshape(1), penalties[1].reshape(1)),
        penalty_grads=max(map(_relative, *penalty_grads)))
    if functions.units_and_penalty is not None:
        borders = thresholds.float() * (1 + 1e-5)
        fused_grads, fused_penalties = [], []
        for fused in (False, True):
            leaves = [w.detach().clone().requires_grad_() for w in weights]
            if fused:
                *units, penalty = functions.units_and_penalty(None, borders, margin, *leaves)
            else:
                units = unit_filter_list(leaves)
                penalty = gap_penalty(leaves, borders, margin, units=units)
            (sum((u * up).sum() for u, up in zip(units, upstream)) + penalty).backward()
            fused_grads.append([w.grad for w in leaves])
            fused_penalties.append(penalty.detach().reshape(1))
        out.update(fused_penalty=_relative(*fused_penalties),
                   fused_weight_grads=max(map(_relative, *fused_grads)))
    return out
