"""A channel criterion that reads calibration data: how much each channel feeds the next layer.

``score_c = sqrt(E[a_c^2]) * sum over consumers ||W[:, c]||``: the RMS activation of channel c
where the next layers read it, times the norm of the weights that read it, i.e. a bound on the
channel's contribution to the consumers' outputs (the quantity ThiNet and He et al. 2017
minimise when they choose channels by the next layer's reconstruction error, here in its
cheap first-order form). Unlike a filter norm, it sees what BN scales, ReLUs and the data do
to the channel.

Its statistics come from calibration batches (:func:`consumer_input_energy`), which the
post-training pruner collects before it ranks; a pruner that never calibrates cannot use it
(the criterion refuses to score without them).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from .bn_recalibration import batch_size_of
from .channel_groups import CONSUMER_KINDS, ChannelGroup
from .importance import Criterion, register_criterion


@torch.no_grad()
def consumer_input_energy(model: nn.Module, groups: Sequence[ChannelGroup],
                          batches: Iterable[Any],
                          forward: Callable[[nn.Module, Any], Any] | None = None,
                          progress: Callable[[int], None] | None = None) -> dict:
    """``{group name: E[a_c^2]}`` (float64, per channel) of the input of each group's first
    consumer layer, averaged over images and positions, from eval-mode passes."""
    forward = forward or (lambda m, x: m(x))
    modules = dict(model.named_modules())
    sums, counts, handles = {}, {}, []

    def hook(name):
        def record(module, args):
            x = args[0].detach().double()
            dims = [d for d in range(x.ndim) if d != 1]
            sums[name] = sums.get(name, 0) + x.pow(2).sum(dims)
            counts[name] = counts.get(name, 0) + x.numel() // x.shape[1]
        return record

    first = {}
    for g in groups:
        consumer = next((n for n, k in g.members if k in CONSUMER_KINDS), None)
        if consumer is not None and consumer not in first.values():
            handles.append(modules[consumer].register_forward_pre_hook(hook(consumer)))
        if consumer is not None:
            first[g.name] = consumer
    flags = [(m, m.training) for m in model.modules()]
    try:
        for m, _ in flags:
            m.training = False
        for batch in batches:
            forward(model, batch)
            if progress is not None:
                progress(batch_size_of(batch))
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.training = flag
    return {g: (sums[c] / max(counts[c], 1)).cpu() for g, c in first.items() if c in sums}


@register_criterion('Activation')
class ActivationImportance(Criterion):
    """RMS input activation of a channel at its consumers times their weight norm over it.

    Set :attr:`statistics` (``{group name: E[a_c^2]}``, e.g. from
    :func:`consumer_input_energy`) before scoring; the post-training pruner does.
    """
    targets = ('channels', )
    needs_calibration = True

    def __init__(self) -> None:
        self.statistics: dict = {}

    def channel_scores(self, modules: Mapping[str, nn.Module], group: ChannelGroup,
                       weights: Mapping[str, torch.Tensor] | None = None,
                       grads: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        if group.name not in self.statistics:
            raise ValueError(f"importance 'Activation' has no calibration statistics for group "
                             f'{group.name!r}; it ranks channels only in the post-training '
                             'pruner, which collects them first')
        norm = None
        for name, kind in group.members:
            if kind not in CONSUMER_KINDS:
                continue
            w = (weights or {}).get(name, modules[name].weight).detach()
            dims = [d for d in range(w.ndim) if d != 1]
            n = torch.linalg.vector_norm(w.float(), dim=dims)
            norm = n if norm is None else norm + n
        energy = self.statistics[group.name].to(norm.device, torch.float32)
        return energy.clamp_min(0).sqrt() * norm
