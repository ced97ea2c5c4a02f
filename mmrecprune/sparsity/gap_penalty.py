"""The gap penalty of on-the-fly pruning: open a gap between the weights that will be pruned
and those that will be kept, so that pruning them later changes little.

Our reading of "pushes a fraction p of each layer's normalised weights towards zero and the rest
away from zero" (only the paper's abstract is public). For a layer with fan-in ``n`` and unit-norm
filters ``w``, magnitudes are measured on the scale-free ``u = |w| * sqrt(n)`` (root mean square 1
in every layer, whatever its fan-in), and the layer's target set ``S`` is its ``p`` fraction of
smallest ``u`` (re-selected every few steps, not differentiated). The layer's term is

    mean_{i in S} u_i  +  mean_{i not in S} relu(margin - u_i)

an L1 pull of the target set to zero and a hinge that keeps the other weights at least ``margin``
from zero. The penalty is the mean of the layer terms, so its size does not grow with depth.
With unit-norm filters the first term alone would already push the norm onto the kept weights;
the hinge stops kept weights near the border from following the target set down.

How it is computed: on the unit filters themselves, which the convs' forward made
(:class:`~mmrecprune.sparsity.hyperspherical.SharedUnitFilters`; normalised here only when not
given), all layers at once with ``torch._foreach_*`` operations, and with the gradient by the
unit filters written out (:class:`_GapPenalty`): the normalisation's backward then projects the
convs' and the penalty's gradients together, once. The target sets and the hinge are found with
``maximum`` / ``clamp`` / ``sign`` arithmetic, not comparisons and ``where``, which cost four to
thirty times a plain pass on a CPU. The fan-in-grouped penalty it replaces normalised the
weights a second time and cost about 8 % of a ResNet-18-w16 training step, the per-layer
autograd loop before that about 20 % (issue 22).
"""
import math

import numpy as np
import torch

from .hyperspherical import unit_filter_list, unit_filters


def scaled_magnitudes(weight):
    """``|unit_filters(weight)| * sqrt(fan_in)`` (root mean square 1 per layer)."""
    fan_in = weight[0].numel()
    return unit_filters(weight).abs() * math.sqrt(fan_in)


def _scaled(units):
    """:func:`scaled_magnitudes` of a list of unit filters (the same bits, one operation for
    all layers), and the ``sqrt(fan_in)`` of each."""
    roots = [math.sqrt(u[0].numel()) for u in units]
    scaled = torch._foreach_abs(units)
    torch._foreach_mul_(scaled, roots)
    return scaled, roots


@torch.no_grad()
def target_thresholds(weights, fraction, units=None, functions=None):
    """Per layer, the magnitude (of :func:`scaled_magnitudes`) at or below which its
    ``fraction`` of smallest weights lie: the border of its target set.

    Bit for bit the magnitudes :func:`gap_penalty` compares with the border, so the k-th
    smallest entry is in its target set. ``units``: the unit filters of ``weights`` where
    already computed (:class:`~mmrecprune.sparsity.hyperspherical.SharedUnitFilters`). (The
    selection runs every ``update_interval`` steps, not every step.) ``functions``: compiled
    drop-ins that normalise ``weights`` where ``units`` is not given (the same bits as the
    unit filters the penalty then compares)."""
    if units is None:
        units = unit_filter_list([w.detach() for w in weights], functions=functions)
    borders = []
    for part in _scaled([u.detach() for u in units])[0]:
        k = max(1, min(part.numel(), int(round(fraction * part.numel()))))
        if part.device.type == 'cpu' and part.dtype in (torch.float32, torch.float64):
            # numpy's introselect finds the same entry in half the time of torch.kthvalue
            border = np.partition(part.reshape(-1).numpy(), k - 1)[k - 1]
            borders.append(torch.tensor(border, dtype=part.dtype))
        else:
            borders.append(part.reshape(-1).kthvalue(k).values)
    return torch.stack(borders)


_WORKSPACES = {}


def _sign_(tensors):
    """``sign_`` of every tensor, one call where torch has ``_foreach_sign_`` (2.1+)."""
    if hasattr(torch, '_foreach_sign_'):
        torch._foreach_sign_(tensors)
    else:
        for t in tensors:
            t.sign_()
    return tensors


def _workspace(units):
    """Three buffers shaped like ``units`` for the penalty's temporaries, kept from step to
    step: on a CPU a fresh tensor of this size costs about as much again as the pass that fills
    it (its pages are faulted in anew after each forward has freed its activations)."""
    first = units[0]
    key = (tuple(tuple(u.shape) for u in units), first.device, first.dtype)
    buffers = _WORKSPACES.get(key)
    if buffers is None:
        if len(_WORKSPACES) >= 4:  # a few models per process at most; never grow unbounded
            _WORKSPACES.clear()
        buffers = _WORKSPACES[key] = [[torch.empty_like(u) for u in units] for _ in range(3)]
    return buffers


class _GapPenalty(torch.autograd.Function):
    """The penalty of all layers from their unit filters ``v``, with its gradient by ``v``
    written out. With ``u = |v| sqrt(K)``, ``k`` = 1 where ``u`` is above the layer's border
    (kept) and ``a`` = 1 where a kept entry's hinge acts (``u < margin``):

        dP / dv_i = sign(v_i) sqrt(K) / L * ((1 - k_i) / n_target - a_i / n_kept)

    computed in the forward (the backward scales it by the incoming gradient)."""

    @staticmethod
    def forward(ctx, borders, margin, *units):
        count = len(units)
        borders = list(borders.unbind())
        roots = [math.sqrt(u[0].numel()) for u in units]
        scaled, kept, hinge = _workspace(units)
        for unit, s in zip(units, scaled):  # as _scaled, into the workspace
            torch.abs(unit, out=s)
        torch._foreach_mul_(scaled, roots)
        for s, k, h, border in zip(scaled, kept, hinge, borders):
            torch.maximum(s, border, out=k)  # u > border: sign(max(u, b) - b)
            torch.clamp(s, max=margin, out=h)
        torch._foreach_sub_(kept, borders)
        _sign_(kept)
        torch._foreach_sub_(hinge, margin)  # -relu(margin - u), kept only
        torch._foreach_mul_(hinge, kept)
        sums = torch.stack([torch.stack([u.sum(), torch.dot(u.view(-1), k.view(-1)),
                                         h.sum(), k.sum()])
                            for u, k, h in zip(scaled, kept, hinge)])
        total, on_kept, hinge_sum, n_kept = sums.unbind(1)
        numels = sums.new_tensor([u.numel() for u in units])
        n_target = (numels - n_kept).clamp_min(1)
        n_kept = n_kept.clamp_min(1)
        penalty = ((total - on_kept) / n_target - hinge_sum / n_kept).sum() / count
        to_target = sums.new_tensor(roots) / (count * n_target)
        to_kept = sums.new_tensor(roots) / (count * n_kept)
        # (1 - k) / n_target - a / n_kept, sqrt(K) / L included; sign(hinge) = -a
        _sign_(hinge)
        torch._foreach_mul_(kept, list(to_target.neg().unbind()))
        torch._foreach_addcmul_(kept, hinge, list(to_kept.unbind()))
        torch._foreach_add_(kept, list(to_target.unbind()))
        direction = (torch._foreach_sign(units) if hasattr(torch, '_foreach_sign')
                     else _sign_([u.clone() for u in units]))  # saved: not a workspace
        torch._foreach_mul_(direction, kept)
        ctx.save_for_backward(*direction)
        return penalty

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        direction = ctx.saved_tensors
        torch._foreach_mul_(direction, [grad] * len(direction))  # not needed again
        return (None, None, *direction)


def gap_penalty(weights, thresholds, margin, units=None, functions=None):
    """The penalty of the module docstring (differentiable in ``weights``), all layers at once
    (see the module docstring).

    Args:
        weights (list[Tensor]): The conv weights (raw; normalised here unless ``units``).
        thresholds (Tensor): One border per weight, from :func:`target_thresholds`.
        margin (float): Hinge margin on the scaled magnitude of the kept weights.
        units (list[Tensor], optional): The unit filters of ``weights``, differentiable in
            them, where the convs' forward already made them
            (:class:`~mmrecprune.sparsity.hyperspherical.SharedUnitFilters`).
        functions (optional): Compiled drop-ins (:func:`mmrecprune.ops.onthefly_functions`)
            that compute the normalisation and the penalty instead of eager PyTorch.
    """
    if units is None:
        units = unit_filter_list(weights, functions=functions)
    borders = thresholds.to(device=units[0].device, dtype=units[0].dtype)
    apply = _GapPenalty.apply if functions is None else functions.gap_penalty
    return apply(borders, float(margin), *units)


@torch.no_grad()
def gap_statistics(weights, masks):
    """Mean scaled magnitude of the pruned and kept entries and their ratio, over layers."""
    pruned, kept = [], []
    for weight, mask in zip(weights, masks):
        u = scaled_magnitudes(weight)
        pruned.append(u[~mask].mean() if (~mask).any() else u.new_zeros(()))
        kept.append(u[mask].mean() if mask.any() else u.new_zeros(()))
    p, k = torch.stack(pruned).mean().item(), torch.stack(kept).mean().item()
    return dict(pruned_magnitude=p, kept_magnitude=k, gap_ratio=k / max(p, 1e-12))
