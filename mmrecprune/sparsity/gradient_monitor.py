"""Gradient statistics, one home for both pruner families.

* :class:`GradientScores`: the mean of a gradient criterion's scores (e.g. Taylor importance of
  weights or channels) over the optimizer steps since the last pruning step, with
  :func:`unscaled_gradients` to read AMP-scaled gradients at their true size;
* :class:`ChannelGradientMonitor`: per-channel activation-gradient statistics, the signal of
  protective restoration. A zeroed (soft-pruned) channel followed by BN and ReLU gets exactly
  zero weight gradients, so the signal is the gradient of the loss w.r.t. the channel's
  *activation*, taken where its consumer layers read it (their input weights are never zeroed).
"""
from __future__ import annotations

import weakref
from functools import partial
from typing import Mapping, Sequence

import torch
from torch import nn

from .channel_groups import CONSUMER_KINDS, ChannelGroup
from .state_checks import check_keys, check_tensor, refuse


def unscaled_gradients(tensors: Mapping[str, torch.Tensor],
                       scale: float = 1.0) -> dict[str, torch.Tensor]:
    """``{name: tensor.grad / scale}`` for the tensors that have a gradient (no copy when
    ``scale == 1``): what a criterion's ``grads=`` argument takes when the gradients carry an
    AMP loss scale."""
    return {name: t.grad if scale == 1 else t.grad / scale
            for name, t in tensors.items() if t.grad is not None}


class GradientScores:
    """The mean of per-step scores over the optimizer steps since the last :meth:`reset`.

    A pruner with a gradient criterion (``criterion.needs_gradients``) calls :meth:`add` with the
    criterion's scores at every optimizer step (gradients ready), reads :meth:`mean` at its
    pruning step and resets after it. A step with a non-finite score (an AMP overflow step) is
    skipped. Under DDP the ranks average :meth:`statistics` (the sums, in place) before the
    pruning step; every rank counts the same steps, so the means agree.

    Scores are kept as ``{key: Tensor}`` (parameter names for weights, group names for
    channels), summed in float32 or wider.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] | None = None
        self.steps = 0

    @torch.no_grad()
    def add(self, scores: Mapping[str, torch.Tensor]) -> bool:
        """Add one step's scores; returns False (and adds nothing) if one is not finite."""
        if not all(bool(torch.isfinite(s).all()) for s in scores.values()):
            return False
        if self.sums is None:
            self.sums = {k: s.clone() for k, s in scores.items()}
        else:
            if scores.keys() != self.sums.keys():
                raise ValueError('GradientScores: the scores of a step name other tensors '
                                 f'({sorted(scores)[:3]}...) than the previous steps '
                                 f'({sorted(self.sums)[:3]}...)')
            self.sums = {k: a + scores[k] for k, a in self.sums.items()}
        self.steps += 1
        return True

    def mean(self) -> dict[str, torch.Tensor] | None:
        """``{key: sum / steps}``, or None if no step was added since the last reset."""
        if self.sums is None:
            return None
        return {k: s / self.steps for k, s in self.sums.items()}

    def reset(self) -> None:
        self.sums, self.steps = None, 0

    def statistics(self) -> list[torch.Tensor]:
        """The sums, which DDP ranks average in place before a pruning step."""
        return list(self.sums.values()) if self.sums is not None else []

    def state_dict(self) -> dict:
        return dict(steps=self.steps, sums=None if self.sums is None else
                    {k: s.detach().cpu().clone() for k, s in self.sums.items()})

    def load_state_dict(self, state: Mapping | None, device=None) -> None:
        """Restore :meth:`state_dict` output (None: nothing accumulated)."""
        if not state or state.get('sums') is None:
            self.reset()
            return
        self.sums = {k: s.to(device) for k, s in state['sums'].items()}
        self.steps = int(state['steps'])


class ChannelGradientMonitor:
    """EMA of per-channel activation-gradient norms, the signal of protective restoration.

    While :attr:`active`, a forward pre-hook on every consumer layer of a group (the ``conv_in`` /
    ``linear_in`` members) puts a gradient hook on the tensor it reads; in backward that hook adds
    ``sum over (batch, space) of (dL/da_c)^2`` for each channel c to a flat buffer (one reduction
    per group and backward pass; a tensor read by several consumers is hooked once, since its
    gradient already sums them). :meth:`update`, called once per optimizer step, turns the sums
    into norms and folds them into the EMA in three vectorised operations.

    Args:
        model (nn.Module): The model holding the groups' layers.
        groups (list[ChannelGroup]): The groups to watch.
        momentum (float): EMA factor beta in ``E <- beta * E + (1 - beta) * G``. Default 0.98.
    """

    def __init__(self, model: nn.Module, groups: Sequence[ChannelGroup],
                 momentum: float = 0.98) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f'grad_momentum must be in [0, 1), got {momentum}')
        self.momentum = momentum
        self.groups = list(groups)
        sizes = [g.num_channels for g in self.groups]
        self.offsets = [0]
        for n in sizes:
            self.offsets.append(self.offsets[-1] + n)
        param = next(model.parameters(), None)
        device = param.device if param is not None else None
        total = self.offsets[-1]
        self.ema = torch.zeros(total, device=device)
        self.count = torch.zeros(total, dtype=torch.long, device=device)
        self._sums = torch.zeros(total, device=device)
        self._hit = [False] * len(self.groups)
        self._channel_group = torch.repeat_interleave(
            torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device))
        modules = dict(model.named_modules())
        self._consumers = [(modules[name], gi) for gi, g in enumerate(self.groups)
                           for name, kind in g.members if kind in CONSUMER_KINDS]
        self._handles = []
        self._seen = {}

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def set_active(self, active: bool) -> None:
        """Install (True) or remove (False) the hooks. Inactive, the monitor costs nothing."""
        if active and not self._handles:
            self._handles = [m.register_forward_pre_hook(partial(self._pre_hook, gi))
                             for m, gi in self._consumers]
        elif not active:
            for h in self._handles:
                h.remove()
            self._handles = []
            self._sums.zero_()
            self._hit = [False] * len(self.groups)

    def view(self, tensor: torch.Tensor, gi: int) -> torch.Tensor:
        """The slice of a flat per-channel tensor belonging to group ``gi``."""
        return tensor[self.offsets[gi]:self.offsets[gi + 1]]

    def _pre_hook(self, gi, module, args):
        x = args[0] if args else None
        if not (torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad):
            return
        key = (id(x), gi)
        seen = self._seen.get(key)
        if seen is not None and seen() is x:
            return
        self._seen[key] = weakref.ref(x)
        x.register_hook(partial(self._accumulate, gi))

    def _accumulate(self, gi, grad):
        dims = [d for d in range(grad.ndim) if d != 1]
        with torch.no_grad():
            sq = torch.linalg.vector_norm(grad, dim=dims, dtype=torch.float32).square()
            self.view(self._sums, gi).add_(sq.to(self._sums.device))
        self._hit[gi] = True

    @torch.no_grad()
    def update(self, scale: float = 1.0) -> None:
        """Fold the gradients accumulated since the last call into the EMA.

        Args:
            scale (float): Loss scale the gradients carry (AMP); they are divided by it.
                Non-finite values (an AMP overflow step) leave the EMA unchanged.
        """
        self._seen.clear()
        if not any(self._hit):
            return
        norms = self._sums.sqrt() / scale
        hit = torch.isfinite(norms)
        if not all(self._hit):
            hit &= torch.tensor(self._hit, device=norms.device)[self._channel_group]
        m = self.momentum
        blended = torch.where(self.count > 0, m * self.ema + (1 - m) * norms, norms)
        self.ema = torch.where(hit, blended, self.ema)
        self.count += hit
        self._sums.zero_()
        self._hit = [False] * len(self.groups)

    def state_dict(self) -> dict:
        return dict(ema=self.ema.cpu().clone(), count=self.count.cpu().clone())

    def check_state(self, state, owner: str = 'ChannelGradientMonitor',
                    entry: str = 'grad_stats') -> None:
        """Refuse (:class:`~.state_checks.PrunerStateError`) a :meth:`state_dict` output
        that does not fit these groups: a finite non-negative float EMA and a non-negative
        int64 count, one entry per channel of every group."""
        check_keys(state, owner, ('ema', 'count'), (), entry)
        shape = tuple(self.ema.shape)
        for key in ('ema', 'count'):
            found = tuple(getattr(state[key], 'shape', ()))
            if found != shape:
                raise refuse(owner, entry, f'is for other groups: {key!r} have shape {found}, '
                             f'the groups need {shape}')
        check_tensor(state['ema'], owner, f'{entry}.ema', 'float', shape)
        check_tensor(state['count'], owner, f'{entry}.count', torch.int64, shape)
        for key in ('ema', 'count'):
            if bool((state[key] < 0).any()):
                raise refuse(owner, f'{entry}.{key}', 'holds negative values (norms and counts '
                             'are >= 0)')

    def load_state_dict(self, state: Mapping) -> None:
        self.check_state(state)
        for key in ('ema', 'count'):
            setattr(self, key, state[key].to(getattr(self, key)))
