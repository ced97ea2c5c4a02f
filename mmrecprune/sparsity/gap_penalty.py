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
"""
import math

import torch

from .hyperspherical import unit_filters


def scaled_magnitudes(weight):
    """``|unit_filters(weight)| * sqrt(fan_in)`` (root mean square 1 per layer)."""
    fan_in = weight[0].numel()
    return unit_filters(weight).abs() * math.sqrt(fan_in)


@torch.no_grad()
def target_thresholds(weights, fraction):
    """Per layer, the magnitude (of :func:`scaled_magnitudes`) at or below which its
    ``fraction`` of smallest weights lie: the border of its target set."""
    out = []
    for weight in weights:
        u = scaled_magnitudes(weight.detach()).flatten()
        k = max(1, min(u.numel(), int(round(fraction * u.numel()))))
        out.append(u.kthvalue(k).values)
    return torch.stack(out)


def gap_penalty(weights, thresholds, margin):
    """The penalty of the module docstring (differentiable in ``weights``).

    Args:
        weights (list[Tensor]): The conv weights (raw; normalised here).
        thresholds (Tensor): One border per weight, from :func:`target_thresholds`.
        margin (float): Hinge margin on the scaled magnitude of the kept weights.
    """
    terms = []
    for weight, border in zip(weights, thresholds):
        u = scaled_magnitudes(weight)
        target = u <= border.to(u.device)
        pruned = target.sum().clamp_min(1)
        kept = (~target).sum().clamp_min(1)
        terms.append((u * target).sum() / pruned
                     + (torch.relu(margin - u) * ~target).sum() / kept)
    return torch.stack(terms).mean()


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
