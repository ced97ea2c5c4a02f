"""When and how much: cost targets over K steps, and the widths that meet a step's target.

A structured run removes a fraction ``f`` of one cost (FLOPs, parameters or channels, measured
by :class:`~.channel_cost.ChannelCostModel`) in ``K`` steps; after step k the cost may be at most
``C_dense * (1 - f * k / K)``. Targets are absolute, so a step also pays back cost that
restoration added since the previous one. Methods describe their widths as a monotone function of
one scalar (a ratio); :meth:`CostSchedule.fit_widths` bisects it to the target.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Mapping

import torch

#: what a structured target removes a fraction of (not ``registry.METRICS``, the evaluators)
COST_METRICS = ('flops', 'params', 'channels')


def parse_target(target: Mapping) -> tuple[str, float]:
    """Check ``dict(flops=f)`` / ``dict(params=f)`` / ``dict(channels=f)``; return (metric, f)."""
    if (not isinstance(target, Mapping) or len(target) != 1
            or next(iter(target)) not in COST_METRICS):
        raise ValueError(f'target must be a dict with one key out of {COST_METRICS} (the '
                         f'fraction to remove), e.g. dict(flops=0.5); got {target!r}')
    metric, fraction = next(iter(target.items()))
    if not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ValueError(f'target {metric}={fraction!r}: the fraction to remove must be in (0, 1)')
    return metric, float(fraction)


def check_schedule_args(target: Mapping, num_steps: int, round_to: int = 1,
                        min_keep: int = 1) -> tuple[str, float]:
    """Validate a schedule's arguments without a model; return ``parse_target(target)``."""
    for name, value in (('num_steps', num_steps), ('round_to', round_to),
                        ('min_keep', min_keep)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f'{name} must be an int >= 1, got {value!r}')
    return parse_target(target)


def round_half_up(x):
    """``x`` rounded to the nearest integer, halves up (not to even, as ``round`` does): a
    count of channels from a fraction. A float gives an int, a tensor a long tensor."""
    if isinstance(x, torch.Tensor):
        return torch.floor(x + 0.5).long()
    return math.floor(x + 0.5)


def round_up_to(k, multiple: int, limit):
    """The width(s) ``k`` rounded up to a multiple of ``multiple`` without exceeding ``limit``
    (the dense width): the one width rounding of channel pruning. ints or integer tensors.

    Raises:
        ValueError: ``multiple`` below 1.
    """
    if multiple < 1:
        raise ValueError(f'round_to must be >= 1, got {multiple}')
    if multiple > 1:
        k = (k + multiple - 1) // multiple * multiple
    return torch.minimum(k, limit) if isinstance(k, torch.Tensor) else min(k, limit)


def bracket(fn: Callable, cost: Callable, target: float, lo: float, hi: float, iters: int = 40):
    """Smallest x in [lo, hi] with ``cost(fn(x)) <= target`` (bisection; ``hi`` if none), as
    ``(x, fn(x), fn just below x)``; the last is None when the answer is ``lo``."""
    first = fn(lo)
    if cost(first) <= target:
        return lo, first, None
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if cost(fn(mid)) <= target:
            hi = mid
        else:
            lo = mid
    return hi, fn(hi), fn(lo)


def bisect(fn: Callable, cost: Callable, target: float, lo: float, hi: float, iters: int = 40):
    """:func:`bracket` without the value below: ``(x, fn(x))``."""
    x, found, _ = bracket(fn, cost, target, lo, hi, iters)
    return x, found


class CostSchedule:
    """The cost budget of every step and the widths that fit it.

    Args:
        cost_model (ChannelCostModel): Cost of the model at given kept widths.
        target (dict): ``dict(flops=f)`` etc., the fraction to remove.
        num_steps (int): K.
        round_to (int): Kept widths are multiples of this (or the dense width).
        min_keep (int): Fewest channels a group keeps.
    """

    def __init__(self, cost_model, target: Mapping, num_steps: int, round_to: int = 1,
                 min_keep: int = 1) -> None:
        self.metric, self.fraction = check_schedule_args(target, num_steps, round_to, min_keep)
        self.cost_model = cost_model
        self.num_steps = num_steps
        self.round_to = round_to
        self.min_keep = min_keep
        self.dense_cost = cost_model.dense(self.metric)

    @property
    def dense_widths(self) -> torch.Tensor:
        return self.cost_model.dense_widths

    def cost(self, widths: torch.Tensor) -> int:
        return self.cost_model.cost(widths, self.metric)

    def target_cost(self, step: int) -> float:
        """The most cost allowed after ``step`` (1..K) steps."""
        return self.dense_cost * (1.0 - self.fraction * step / self.num_steps)

    def min_widths(self) -> torch.Tensor:
        return round_up_to(torch.full_like(self.dense_widths, self.min_keep), self.round_to,
                           self.dense_widths)

    def check_reachable(self, num_groups: int, prune_residual: bool) -> None:
        """Raise ValueError if even the narrowest allowed model misses the final target."""
        best = self.cost(self.min_widths())
        if best > self.target_cost(self.num_steps):
            kinds = 'internal ' if not prune_residual else ''
            hint = ', or set prune_residual=True' if not prune_residual else ''
            raise ValueError(
                f'target {self.metric}={self.fraction} is unreachable: pruning the '
                f'{num_groups} {kinds}channel groups down to min_keep={self.min_keep} '
                f'(round_to={self.round_to}) removes at most '
                f'{1 - best / self.dense_cost:.1%} of the {self.metric}; lower the '
                f'target{hint}')

    def fit_widths(self, widths_at: Callable, target: float, lo: float, hi: float):
        """Bisect a widths-valued ``widths_at`` to the target, then give back rounding slack.

        With ``round_to > 1`` every group of one dense width jumps by a whole multiple at the same
        ratio, so the smallest ratio meeting the target can land well below it (ResNet-50,
        round_to=16: -52.7 % FLOPs for a -50 % target). The groups whose width just below that
        ratio is larger take it, the cheapest extra cost per channel first, while the cost stays
        within the target. Each group keeps a width of the bisection (a multiple of
        ``round_to``), so bounds and rounding still hold. Returns ``(ratio, widths)``.
        """
        cost = partial(self.cost_model.cost, metric=self.metric)
        x, k, below = bracket(widths_at, cost, target, lo, hi)
        if self.round_to == 1 or below is None:
            return x, k
        base = cost(k)
        extra = []
        for gi in (below > k).nonzero().flatten().tolist():
            trial = k.clone()
            trial[gi] = below[gi]
            extra.append(((cost(trial) - base) / float(below[gi] - k[gi]), gi))
        for _, gi in sorted(extra):
            trial = k.clone()
            trial[gi] = below[gi]
            if cost(trial) <= target:
                k = trial
        return x, k
