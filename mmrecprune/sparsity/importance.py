"""What matters: criteria that score weights (elements) or channels, behind one interface.

A criterion (:class:`Criterion`) scores

* **elements**: ``criterion.element_scores(params, grads=None) -> {name: Tensor}``, one score per
  entry of every given tensor (same shapes). Unstructured pruners rank the surviving weights by
  it (:func:`~mmrecprune.sparsity.global_magnitude_masks` and its siblings rank ``|score|``);
* **channels**: ``criterion(model_or_modules, group, weights=None, grads=None) ->
  Tensor[group.num_channels]``, one score per channel of a
  :class:`~mmrecprune.sparsity.ChannelGroup`. Coupled channels (the same channel in every member
  of the group) are scored together by summing over the members, so a residual channel's score
  covers all the convs that write it. By default the members that *compute* the channel count
  (conv out-filters, depthwise filters, linear rows); ``include_inputs=True`` also adds the
  consumers' input slices.

Higher scores are kept. Scores come from the module weights, or from given tensors (``params``;
``weights={member name: tensor}`` in place of some members' weights, e.g. the backups of
soft-pruned channels), and gradient criteria (``needs_gradients``) read each tensor's ``.grad``
or given gradients (``grads``, keyed like the tensors). Pruners average a gradient criterion's
scores over optimizer steps with :class:`~mmrecprune.sparsity.GradientScores`.

The built-in criteria are in :data:`CRITERION_TYPES` (config name -> class), which
:func:`register_criterion` extends; ``mmrecprune.registry.CRITERIA`` (MMEngine) is seeded from it,
so configs name them ``importance=dict(type='mmrecprune.Taylor')``, and a plugin registers its
own with ``@CRITERIA.register_module()`` without touching this file.

Scores are float32 (float64 for float64 weights) on the weights' device; each member costs one
vectorised reduction.
"""
from __future__ import annotations

import zlib
from typing import Callable, Mapping, Union

import torch
from torch import nn

from .channel_groups import CHANNEL_PARAMS, CONSUMER_KINDS, FILTER_KINDS, ChannelGroup

ModulesLike = Union[nn.Module, Mapping[str, nn.Module]]

#: What a criterion can score: weights one by one, or channels of a ChannelGroup.
TARGETS = ('elements', 'channels')

#: The criteria by config name (``importance=dict(type=NAME, ...)``); extend with
#: :func:`register_criterion`.
CRITERION_TYPES: dict[str, type] = {}


def register_criterion(name: str | None = None, force: bool = False) -> Callable[[type], type]:
    """Class decorator adding a criterion to :data:`CRITERION_TYPES` (plain PyTorch).

    Configs and plugins register with ``mmrecprune.registry.CRITERIA`` (MMEngine) instead; that
    registry also finds every criterion of this table.

    Args:
        name (str, optional): The config name. Defaults to the class name.
        force (bool): Replace a criterion of the same name. Defaults to False.
    """
    def add(cls: type) -> type:
        key = name or cls.__name__
        if not force and CRITERION_TYPES.get(key, cls) is not cls:
            raise KeyError(f'criterion {key!r} is already registered '
                           f'({CRITERION_TYPES[key].__qualname__}); pass force=True to replace it')
        CRITERION_TYPES[key] = cls
        return cls
    return add


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


class Criterion:
    """The interface of every criterion: scores of elements and / or of channels.

    Subclasses implement :meth:`element_scores` and / or :meth:`channel_scores` and list what they
    score in ``targets``. Most criteria are computed entry by entry from a weight and its
    gradient: derive those from :class:`WeightCriterion` and define only ``score``.

    Attributes:
        targets (tuple[str, ...]): What it scores: ``'elements'`` (weights, for unstructured
            pruners) and / or ``'channels'`` (for structured pruners).
        needs_gradients (bool): Whether it reads gradients. Pruners then average its scores over
            the optimizer steps since their last pruning step.
    """
    targets: tuple[str, ...] = TARGETS
    needs_gradients = False

    def element_scores(self, params: Mapping[str, torch.Tensor],
                       grads: Mapping[str, torch.Tensor] | None = None) -> dict:
        """One score per entry of each tensor of ``params`` (higher = keep).

        Args:
            params (Mapping[str, Tensor]): The tensors to score, by name (module weights or
                any tensors of their shapes).
            grads (Mapping[str, Tensor], optional): Gradients by the same names; a name that is
                missing reads its tensor's ``.grad``. Only gradient criteria read them.

        Returns:
            dict[str, Tensor]: Scores of ``params``' shapes, same keys and order.
        """
        raise NotImplementedError(f'{type(self).__name__} does not score weights one by one '
                                  f'(it scores {self.targets})')

    def channel_scores(self, modules: Mapping[str, nn.Module], group: ChannelGroup,
                       weights: Mapping[str, torch.Tensor] | None = None,
                       grads: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """One score per channel of ``group`` (higher = keep).

        Args:
            modules (Mapping[str, nn.Module]): ``dict(model.named_modules())``.
            group (ChannelGroup): The coupled channels to score.
            weights (Mapping[str, Tensor], optional): ``{member name: tensor}`` scored in place
                of those members' weights.
            grads (Mapping[str, Tensor], optional): ``{member name: gradient}`` in place of
                those members' ``weight.grad``.
        """
        raise NotImplementedError(f'{type(self).__name__} does not score channels '
                                  f'(it scores {self.targets})')

    def __call__(self, model_or_modules: ModulesLike, group: ChannelGroup,
                 weights: Mapping[str, torch.Tensor] | None = None,
                 grads: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """:meth:`channel_scores` on a model or its ``named_modules()`` dict."""
        return self.channel_scores(_modules(model_or_modules), group, weights, grads)


def _gradient(criterion, name: str, tensor: torch.Tensor | None,
              grads: Mapping[str, torch.Tensor] | None, what: str) -> torch.Tensor | None:
    if not criterion.needs_gradients:
        return None
    grad = (grads or {}).get(name)
    if grad is None and tensor is not None:
        grad = tensor.grad
    if grad is None and tensor is not None and not tensor.requires_grad:
        raise RuntimeError(f'{type(criterion).__name__} needs gradients, but {what} {name!r} is '
                           'frozen (requires_grad=False, e.g. by a backbone\'s frozen_stages, '
                           'which mmdet configs set to 1), so it has none: unfreeze what is '
                           'pruned (frozen_stages=-1) or use a criterion without gradients (L1)')
    if grad is None:
        raise RuntimeError(f'{type(criterion).__name__} needs gradients, but {what} {name!r} has '
                           '.grad None; run backward() first (or pass grads=)')
    return grad


class WeightCriterion(Criterion):
    """A criterion computed entry by entry from a weight and its gradient.

    Subclasses define :meth:`score`; a channel's score is the sum of its entries' scores over
    the group's members (override :meth:`reduce` for another reduction, :meth:`finish` to
    transform the sum).

    Args:
        include_inputs (bool): Also score the consumers' input slices of a channel (``conv_in``
            / ``linear_in`` members), as Torch-Pruning does. Defaults to False (filters only, as
            in Li et al. 2017). Element scores do not depend on it.
    """
    kinds: tuple[str, ...] = FILTER_KINDS

    def __init__(self, include_inputs: bool = False) -> None:
        self.include_inputs = include_inputs

    def score(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """Scores of ``weight``'s entries, same shape (``grad`` is None unless
        ``needs_gradients``)."""
        raise NotImplementedError

    def reduce(self, weight: torch.Tensor, grad: torch.Tensor | None, dim: int) -> torch.Tensor:
        """One member's part of the channel scores: its entries' scores summed per slice along
        ``dim``."""
        s = self.score(weight, grad)
        others = [d for d in range(s.ndim) if d != dim]
        return s.sum(others) if others else s

    def finish(self, score: torch.Tensor) -> torch.Tensor:
        return score

    def member_kinds(self) -> tuple[str, ...]:
        return self.kinds + (CONSUMER_KINDS if self.include_inputs else ())

    @torch.no_grad()
    def element_scores(self, params, grads=None):
        return {name: self.score(p.detach(), _gradient(self, name, p, grads, 'tensor'))
                for name, p in params.items()}

    @torch.no_grad()
    def channel_scores(self, modules, group, weights=None, grads=None):
        weights = weights or {}
        score = None
        kinds = self.member_kinds()
        for name, kind in group.members:
            if kind not in kinds:
                continue
            module = modules[name]
            attr, dim = CHANNEL_PARAMS[kind][0]  # the weight; biases and stats are not scored
            own = getattr(module, attr, None)
            weight = weights.get(name, own)
            if weight is None:
                continue
            grad = _gradient(self, name, own, grads, f'the {attr} of {type(module).__name__}')
            part = self.reduce(weight.detach(), grad, dim).float()
            score = part if score is None else score + part
        if score is None:
            raise ValueError(f'{type(self).__name__}: group {group.name!r} has no member of kind '
                             f'{kinds} with a weight to score')
        return self.finish(score)


@register_criterion('L1')
class L1Importance(WeightCriterion):
    """Magnitude: ``|w|`` per weight; per channel the sum of absolute weights of its filters
    (Li et al. 2017, "L1-norm")."""

    def score(self, weight, grad):
        return weight.abs()

    def reduce(self, weight, grad, dim):
        return _channel_norm(weight, dim, 1)


@register_criterion('L2')
class L2Importance(WeightCriterion):
    """Magnitude: ``|w|`` per weight (the same ranking as ``w ** 2``); per channel the Euclidean
    norm of its filters, all coupled members taken as one vector."""

    def score(self, weight, grad):
        return weight.abs()

    def reduce(self, weight, grad, dim):
        return _channel_norm(weight.float(), dim, 2).pow(2)

    def finish(self, score):
        return score.sqrt()


@register_criterion('BNScale')
class BNScaleImportance(WeightCriterion):
    """Absolute BatchNorm scale ``|gamma|`` (Network Slimming), summed over the group's BNs.

    Channels only; ``include_inputs`` is ignored (only affine BN members are scored).
    """
    kinds = ('bn', )
    targets = ('channels', )

    def member_kinds(self):
        return self.kinds

    def score(self, weight, grad):
        return weight.abs()

    def element_scores(self, params, grads=None):
        return Criterion.element_scores(self, params, grads)  # channels only


@register_criterion('Taylor')
class TaylorImportance(WeightCriterion):
    """First-order Taylor saliency (Molchanov et al.): ``|w * dL/dw|`` per weight, the loss change
    of removing it to first order; per channel the sum over its filters' weights.

    Needs gradients: call it after ``loss.backward()`` (and before ``zero_grad``), or pass
    ``grads``. Pruners average it over the optimizer steps since their last pruning step.
    """
    needs_gradients = True

    def score(self, weight, grad):
        return (weight * grad).abs()

    def reduce(self, weight, grad, dim):
        return _channel_norm(weight * grad, dim, 1)


@register_criterion('Random')
class RandomImportance(Criterion):
    """A fixed random score per weight or channel: the random control of a method.

    Scores come from ``seed`` and the tensor's (or group's) name and shape alone, not the
    weights, so every step of a run, every rank and a resumed run rank them the same way (an
    iterative pruner keeps pruning the same random order).

    Args:
        seed (int): Seed of the scores. Defaults to 0.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def _generator(self, name: str) -> torch.Generator:
        return torch.Generator().manual_seed(zlib.crc32(f'{self.seed}:{name}'.encode()))

    def element_scores(self, params, grads=None):
        return {name: torch.rand(p.shape, generator=self._generator(name)).to(p.device)
                for name, p in params.items()}

    def channel_scores(self, modules, group, weights=None, grads=None):
        return torch.rand(group.num_channels, generator=self._generator(group.name))


#: The name of earlier releases of :data:`CRITERION_TYPES` (the same dict).
IMPORTANCES = CRITERION_TYPES


def criterion_targets(criterion) -> tuple[str, ...]:
    """What ``criterion`` scores (a plain callable ``f(modules, group, weights)`` scores
    channels)."""
    return tuple(getattr(criterion, 'targets', ('channels', )))


def check_criterion(criterion, target: str, owner: str):
    """``criterion`` if it scores ``target`` (``'elements'`` or ``'channels'``), else ValueError
    naming ``owner``."""
    if target not in TARGETS:
        raise ValueError(f'target must be one of {TARGETS}, got {target!r}')
    if target not in criterion_targets(criterion):
        which = sorted(n for n, c in CRITERION_TYPES.items()
                       if target in getattr(c, 'targets', ()))
        raise ValueError(f'{owner}: importance {type(criterion).__name__} scores '
                         f'{criterion_targets(criterion)}, not {target}; built-in criteria that '
                         f'do: {which}')
    return criterion


def build_criterion(cfg, types: Mapping[str, type] | None = None):
    """Build a criterion from :data:`CRITERION_TYPES` (plain PyTorch, no registry scopes).

    Args:
        cfg (dict | str | Criterion): ``dict(type='L1' | 'L2' | 'BNScale' | 'Taylor' |
            'Random' | <registered name>, **kw)`` (a ``'mmrecprune.'`` prefix is allowed), just
            the type name, or an already built criterion (returned as is).
        types (Mapping[str, type], optional): The table to look names up in. Defaults to
            :data:`CRITERION_TYPES`.

    Raises:
        ValueError: On an unknown type or an argument the criterion does not take.
    """
    types = CRITERION_TYPES if types is None else types
    if callable(cfg) and not isinstance(cfg, (str, dict)):
        return cfg
    cfg = dict(type=cfg) if isinstance(cfg, str) else dict(cfg)
    kind = cfg.pop('type', None)
    name = kind[len('mmrecprune.'):] if isinstance(kind, str) and kind.startswith(
        'mmrecprune.') else kind
    if name not in types:
        raise ValueError(f'unknown importance {kind!r}; choose one of {sorted(types)}, '
                         "e.g. importance=dict(type='L1')")
    try:
        return types[name](**cfg)
    except TypeError as err:
        raise ValueError(f'importance {kind}: {err}') from None


#: The name of earlier releases of :func:`build_criterion`.
build_importance = build_criterion


def group_importances(model: ModulesLike, groups: list[ChannelGroup],
                      criterion) -> dict[str, torch.Tensor]:
    """Score every group with one criterion.

    Args:
        model (nn.Module | Mapping[str, nn.Module]): The model the groups were found on (or
            its ``named_modules()`` as a dict).
        groups (list[ChannelGroup]): The groups to score.
        criterion (callable): A criterion scoring channels, e.g. ``L1Importance()``.

    Returns:
        dict[str, Tensor]: ``{group.name: scores}``.
    """
    modules = _modules(model)  # once, not once per group
    return {g.name: criterion(modules, g) for g in groups}
