"""Filter importance criteria, all behind one interface.

Every criterion is a callable ``imp(model_or_modules, group, weights=None) ->
Tensor[group.num_channels]`` that scores the channels of one :class:`ChannelGroup`; ``weights``
(``{member name: tensor}``) scores given tensors in place of some members' weights, e.g. the
backups of soft-pruned channels. Channels that are coupled (the same channel in
every member of the group) are scored together by summing over the members, so a residual
channel's score covers all the convs that write it. By default the members that *compute* the
channel count (conv out-filters, depthwise filters, linear rows); ``include_inputs=True`` also adds
the consumers' input slices. Scores are float32 on the weights' device; each member costs one
vectorised reduction.
"""
from __future__ import annotations

import zlib
from typing import Mapping, Union

import torch
from torch import nn

from .channel_groups import CHANNEL_PARAMS, FILTER_KINDS, ChannelGroup

ModulesLike = Union[nn.Module, Mapping[str, nn.Module]]


def _modules(model_or_modules: ModulesLike) -> Mapping[str, nn.Module]:
    if isinstance(model_or_modules, nn.Module):
        return dict(model_or_modules.named_modules())
    return model_or_modules


def _channel_norm(t: torch.Tensor, dim: int, p: float) -> torch.Tensor:
    """``p``-norm of every slice of ``t`` along ``dim`` (one fused kernel, no copies)."""
    others = [d for d in range(t.ndim) if d != dim]
    if not others:  # 1-D, e.g. a BN scale
        return t.abs()
    return torch.linalg.vector_norm(t, ord=p, dim=others)


class _WeightImportance:
    """Base class: ``reduce`` each member's channel-axis weight slices and sum over members.

    Args:
        include_inputs (bool): Also score the consumers' input slices (``conv_in`` /
            ``linear_in`` members), as Torch-Pruning does. Defaults to False (filters only, as in
            Li et al. 2017).
    """
    kinds: tuple[str, ...] = FILTER_KINDS

    def __init__(self, include_inputs: bool = False) -> None:
        self.include_inputs = include_inputs

    def member_kinds(self) -> tuple[str, ...]:
        return self.kinds + (('conv_in', 'linear_in') if self.include_inputs else ())

    def reduce(self, module: nn.Module, weight: torch.Tensor, dim: int) -> torch.Tensor:
        raise NotImplementedError

    def finish(self, score: torch.Tensor) -> torch.Tensor:
        return score

    #: True for criteria that read ``.grad`` (a pruner accumulates them at optimizer steps)
    needs_gradients = False

    def __call__(self, model_or_modules: ModulesLike, group: ChannelGroup,
                 weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        modules = _modules(model_or_modules)
        weights = weights or {}
        score = None
        kinds = self.member_kinds()
        for name, kind in group.members:
            if kind not in kinds:
                continue
            module = modules[name]
            attr, dim = CHANNEL_PARAMS[kind][0]  # the weight; biases and stats are not scored
            weight = weights.get(name, getattr(module, attr, None))
            if weight is None:
                continue
            part = self.reduce(module, weight, dim).float()
            score = part if score is None else score + part
        if score is None:
            raise ValueError(f'{type(self).__name__}: group {group.name!r} has no member of kind '
                             f'{kinds} with a weight to score')
        return self.finish(score)


class L1Importance(_WeightImportance):
    """Sum of absolute weights of each channel's filters (Li et al. 2017, "L1-norm")."""

    def reduce(self, module, weight, dim):
        return _channel_norm(weight.detach(), dim, 1)


class L2Importance(_WeightImportance):
    """Euclidean norm of each channel's filters, all coupled members taken as one vector."""

    def reduce(self, module, weight, dim):
        return _channel_norm(weight.detach().float(), dim, 2).pow(2)

    def finish(self, score):
        return score.sqrt()


class BNScaleImportance(_WeightImportance):
    """Absolute BatchNorm scale ``|gamma|`` (Network Slimming), summed over the group's BNs.

    ``include_inputs`` is ignored: only affine BN members are scored.
    """
    kinds = ('bn', )

    def member_kinds(self):
        return self.kinds

    def reduce(self, module, weight, dim):
        return weight.detach().abs()


class TaylorImportance(_WeightImportance):
    """First-order Taylor score ``sum |w * dL/dw|`` over each channel's filters (Molchanov et al.).

    Needs gradients: call it after ``loss.backward()`` (and before ``zero_grad``). Structured
    pruners average it over the optimizer steps since their last pruning step.
    """
    needs_gradients = True

    def reduce(self, module, weight, dim):
        if weight.grad is None:
            raise RuntimeError('TaylorImportance needs gradients, but a weight of '
                               f'{type(module).__name__} has .grad None; run backward() first')
        return _channel_norm(weight.detach() * weight.grad, dim, 1)


class RandomImportance:
    """A fixed random score per channel: the random-channel control of a structured method.

    Scores come from ``seed`` and the group's name alone (not the weights), so every step of a
    run, every rank and a resumed run rank a group's channels the same way.

    Args:
        seed (int): Seed of the scores. Defaults to 0.
    """
    needs_gradients = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def __call__(self, model_or_modules: ModulesLike, group: ChannelGroup,
                 weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(
            zlib.crc32(f'{self.seed}:{group.name}'.encode()))
        return torch.rand(group.num_channels, generator=generator)


IMPORTANCES = {
    'L1': L1Importance,
    'L2': L2Importance,
    'BNScale': BNScaleImportance,
    'Taylor': TaylorImportance,
    'Random': RandomImportance,
}


def build_importance(cfg) -> _WeightImportance:
    """Build a criterion from a config, ``dict(type='L1' | 'L2' | 'BNScale' | 'Taylor' |
    'Random', **kw)`` (or just the type name), or return an already built criterion."""
    if callable(cfg) and not isinstance(cfg, (str, dict)):
        return cfg
    cfg = dict(type=cfg) if isinstance(cfg, str) else dict(cfg)
    kind = cfg.pop('type', None)
    if kind not in IMPORTANCES:
        raise ValueError(f'unknown importance {kind!r}; choose one of {sorted(IMPORTANCES)}, '
                         "e.g. importance=dict(type='L1')")
    try:
        return IMPORTANCES[kind](**cfg)
    except TypeError as err:
        raise ValueError(f'importance {kind}: {err}') from None


def group_importances(model: ModulesLike, groups: list[ChannelGroup],
                      criterion) -> dict[str, torch.Tensor]:
    """Score every group with one criterion.

    Args:
        model (nn.Module | Mapping[str, nn.Module]): The model the groups were found on (or
            its ``named_modules()`` as a dict).
        groups (list[ChannelGroup]): The groups to score.
        criterion (callable): An importance object, e.g. ``L1Importance()``.

    Returns:
        dict[str, Tensor]: ``{group.name: scores}``.
    """
    modules = _modules(model)  # once, not once per group
    return {g.name: criterion(modules, g) for g in groups}
