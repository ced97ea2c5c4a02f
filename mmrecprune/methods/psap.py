"""Structured (filter) pruning in a prune-train loop: PSAP and its L1 baselines.

Plain PyTorch: a hook only says *when* a step happens and an optimizer wrapper calls
:meth:`StructuredPruner.record_gradients` / :meth:`StructuredPruner.reapply_masks` around every
optimizer step. Everything is expressed with the engine (``mmrecprune.sparsity``): channel groups,
L1 importance, channel masks, slimming.

Our reading of "Protective Self-Adaptive Pruning" (Li, Zhao; only the abstract is public, so the
formulas below are ours). Notation: group g (a :class:`~mmrecprune.sparsity.ChannelGroup`) has
``N_g`` channels, ``n_g`` of them currently kept (mask ``M_g``).

* **Schedule.** ``num_steps`` = K steps; after step k the model's cost (FLOPs, params or channel
  count, see :class:`ChannelCostModel`) must be at most ``C_k = C_dense * (1 - T * k / K)`` where
  T is the target fraction to remove. Targets are absolute, so a step also pays back any cost that
  protective restoration added since the previous one.
* **Layer sparsity.** ``s_g = #{w in W_m[M_g] : |w| < eps * mean|W_m[M_g]|} / #W_m[M_g]``, summed
  over the group's filter layers m (conv / depthwise / linear producing the channel), counted on
  the *kept* filters only (``eps = 0.1``: about 6 % of a Gaussian layer).
* **Self-adaptive ratios.** ``a_g = phi + (1 - phi) * s_g / mean_g(s_g)`` (``phi = 0.3``, the
  floor), and the step prunes ``p_g = round(min(alpha * a_g, 1) * n_g)`` of the kept channels
  (capped so ``min_keep`` channels and every protected channel stay), kept width rounded up to
  ``round_to``. ``alpha`` is the smallest value (bisection; cost is monotone in alpha) with
  cost <= ``C_k``. With ``round_to > 1`` the slack that rounding leaves below ``C_k`` is given
  back (groups take their width just below ``alpha``, cheapest first, while cost <= ``C_k``).
  Within a group the channels with the smallest filter L1 norm go. ``adaptive=False`` uses
  ``a_g = 1`` (uniform ratios relative to the kept width).
* **Soft pruning.** Pruned filters (conv / BN / linear rows, see
  :func:`~mmrecprune.sparsity.apply_channel_masks`) are zeroed, not removed, and re-zeroed after
  every optimizer step; their values (and BN statistics) at pruning time are kept as a backup.
* **Protective restoration.** A zeroed channel followed by BN and ReLU gets exactly zero weight
  gradients (``d ReLU(0) = 0``), so the signal is the gradient of the loss w.r.t. the channel's
  *activation*, taken where its consumer layers read it (their input weights are never zeroed):
  ``G_c = || dL / da_c ||_2`` per optimizer step, tracked as an EMA
  ``E_c <- beta * E_c + (1 - beta) * G_c`` (``beta = 0.98``, about 50 optimizer steps; first
  value taken as is) by :class:`ChannelGradientMonitor`. Before every step after the first, a
  pruned channel with ``E_c > kappa * median{E_j : j kept in g}`` (``kappa = protect_factor =
  1.5``) is restored from its backup and exempt from that step. The last step drops the
  exemptions only if the target cannot be met otherwise; after it nothing is restored, so the
  final mask meets the target.

Baselines on the same schedule and soft masks: ``L1UniformPruner`` (one ratio rho of the *dense*
width for every group, Li et al. 2017) and ``L1GlobalPruner`` (channels ranked across groups by
filter L1 divided by the group's mean kept L1). Both accept ``protective=True`` as well.
"""
from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field
from functools import partial
from types import SimpleNamespace
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from mmrecprune.sparsity import (CHANNEL_PARAMS, ChannelGroup, L1Importance, apply_channel_masks,
                                 find_channel_groups, global_channel_masks, slim_model)
from mmrecprune.sparsity.channel_cost import ChannelCostModel
from mmrecprune.sparsity.channel_groups import FILTER_KINDS

METRICS = ('flops', 'params', 'channels')
_IN_KINDS = ('conv_in', 'linear_in')
# member kinds whose tensors soft pruning zeroes (and restoration brings back)
_ZEROED_KINDS = FILTER_KINDS + ('bn', )


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5).long()


def _round_up_to(k: torch.Tensor, multiple: int, limit: torch.Tensor) -> torch.Tensor:
    """Round ``k`` up to a multiple of ``multiple`` without exceeding ``limit``."""
    if multiple > 1:
        k = torch.div(k + multiple - 1, multiple, rounding_mode='floor') * multiple
    return torch.minimum(k, limit)


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
                           for name, kind in g.members if kind in _IN_KINDS]
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

    def load_state_dict(self, state: Mapping) -> None:
        for key in ('ema', 'count'):
            value = state[key]
            if value.shape != getattr(self, key).shape:
                raise ValueError(f'gradient statistics {key!r} have shape {tuple(value.shape)}, '
                                 f'the groups need {tuple(getattr(self, key).shape)}')
            setattr(self, key, value.to(getattr(self, key)))


@dataclass
class StepPlan:
    """What one pruning step will do; :meth:`StructuredPruner.commit` carries it out."""
    step: int
    masks: dict
    restored: dict
    target: float
    cost: int
    info: dict = field(default_factory=dict)


class StructuredPruner:
    """Soft channel pruning on a cost schedule; subclasses decide which channels go.

    Args:
        model (nn.Module): The model to prune, traced as ``model(example_input)``.
        example_input (Tensor): A small input, e.g. ``torch.randn(1, 3, 56, 56)``; FLOPs are
            measured for it.
        target (dict): One of ``dict(flops=f)``, ``dict(params=f)``, ``dict(channels=f)``:
            the fraction ``f`` in (0, 1) of that cost to *remove* (of the modules under ``scope``).
        num_steps (int): Pruning steps K; step k brings the cost to ``1 - f * k / K`` of dense.
        scope (str): Only groups whose filters lie under this module are pruned and only its
            cost is counted, e.g. ``'backbone'``. Defaults to ``''`` (whole model).
        prune_residual (bool): Also prune residual / boundary channels (changes block output
            widths). Defaults to False (only channels inside blocks).
        round_to (int): Kept widths are rounded up to a multiple of this. Defaults to 1.
        min_keep (int): Fewest channels a group keeps. Defaults to 1.
        protective (bool): Restore pruned channels whose activation gradient stays large (see the
            module docstring). Defaults to False here; :class:`PSAPPruner` defaults to True.
        protect_factor (float): kappa of the restoration rule. Defaults to 1.5.
        grad_momentum (float): beta of the gradient EMA. Defaults to 0.98.

    Raises:
        ValueError: On a bad argument, or a target that no schedule can reach.
    """
    method = 'structured'

    def __init__(self, model: nn.Module, example_input: torch.Tensor, target: Mapping,
                 num_steps: int, scope: str = '', prune_residual: bool = False,
                 round_to: int = 1, min_keep: int = 1, protective: bool = False,
                 protect_factor: float = 1.5, grad_momentum: float = 0.98) -> None:
        self.metric, self.fraction = parse_target(target)
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f'num_steps must be an int >= 1, got {num_steps!r}')
        if not isinstance(round_to, int) or round_to < 1:
            raise ValueError(f'round_to must be an int >= 1, got {round_to!r}')
        if not isinstance(min_keep, int) or min_keep < 1:
            raise ValueError(f'min_keep must be an int >= 1, got {min_keep!r}')
        if protect_factor <= 0:
            raise ValueError(f'protect_factor must be > 0, got {protect_factor}')
        self.model = model
        self.num_steps = num_steps
        self.scope = scope
        self.prune_residual = prune_residual
        self.round_to = round_to
        self.min_keep = min_keep
        self.protective = protective
        self.protect_factor = protect_factor
        prefix = f'{scope}.' if scope else ''
        groups = find_channel_groups(model, example_input, prune_residual=prune_residual)
        self.groups = [g for g in groups if all(
            n.startswith(prefix) for n, k in g.members if k in _ZEROED_KINDS)]
        if not self.groups:
            raise ValueError(f'no prunable channel group under {scope or "the model"!r} '
                             f'(prune_residual={prune_residual}); is it a conv network?')
        self.cost_model = ChannelCostModel(model, self.groups, example_input, scope)
        self.dense_cost = self.cost_model.dense(self.metric)
        self._modules = dict(model.named_modules())
        device = self._device()
        self.masks = {g.name: torch.ones(g.num_channels, dtype=torch.bool, device=device)
                      for g in self.groups}
        self.protected = {g.name: torch.zeros_like(m) for g, m in
                          zip(self.groups, self.masks.values())}
        self.step_count = 0
        self.history = []
        self._backups = {}
        self._zero_targets = []
        self.monitor = (ChannelGradientMonitor(model, self.groups, grad_momentum)
                        if protective else None)
        self.check_reachable()

    # ---- costs and schedule -------------------------------------------------------------------
    def _device(self):
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device('cpu')

    def widths(self, masks: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Kept channels per group (LongTensor, group order, on CPU)."""
        masks = self.masks if masks is None else masks
        return torch.stack([masks[g.name].sum() for g in self.groups]).long().cpu()

    def cost(self, masks: Mapping[str, torch.Tensor] | None = None,
             metric: str | None = None) -> int:
        """Cost of the model as if slimmed to ``masks`` (default: the current masks)."""
        return self.cost_model.cost(self.widths(masks), metric or self.metric)

    def target_cost(self, step: int) -> float:
        """The most cost allowed after ``step`` (1..K) steps."""
        return self.dense_cost * (1.0 - self.fraction * step / self.num_steps)

    def _dense_widths(self):
        return self.cost_model.dense_widths

    def _min_widths(self):
        return _round_up_to(torch.full_like(self._dense_widths(), self.min_keep), self.round_to,
                            self._dense_widths())

    def check_reachable(self) -> None:
        """Raise ValueError if even the narrowest allowed model misses the final target."""
        best = self.cost_model.cost(self._min_widths(), self.metric)
        goal = self.target_cost(self.num_steps)
        if best > goal:
            kinds = 'internal ' if not self.prune_residual else ''
            hint = ', or set prune_residual=True' if not self.prune_residual else ''
            raise ValueError(
                f'target {self.metric}={self.fraction} is unreachable: pruning the '
                f'{len(self.groups)} {kinds}channel groups down to min_keep={self.min_keep} '
                f'(round_to={self.round_to}) removes at most '
                f'{1 - best / self.dense_cost:.1%} of the {self.metric}; lower the '
                f'target{hint}')

    @staticmethod
    def _bisect(fn: Callable, cost: Callable, target: float, lo: float, hi: float,
                iters: int = 40):
        """Smallest x in [lo, hi] with ``cost(fn(x)) <= target``, as ``(x, fn(x))``; ``hi`` if
        none (the caller decides whether falling short is an error)."""
        x, found, _ = StructuredPruner._bracket(fn, cost, target, lo, hi, iters)
        return x, found

    @staticmethod
    def _bracket(fn, cost, target, lo, hi, iters=40):
        """:meth:`_bisect` plus ``fn`` just below the answer (``None`` if the answer is ``lo``)."""
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

    def _fit_widths(self, widths_at: Callable, target: float, lo: float, hi: float):
        """Bisect a widths-valued ``widths_at`` to the target, then give back rounding slack.

        With ``round_to > 1`` every group of one dense width jumps by a whole multiple at the same
        ratio, so the smallest ratio meeting the target can land well below it (ResNet-50,
        round_to=16: -52.7 % FLOPs for a -50 % target). The groups whose width just below that
        ratio is larger take it, the cheapest extra cost per channel first, while the cost stays
        within the target. Each group keeps a width of the bisection (a multiple of
        ``round_to``), so bounds and rounding still hold.
        """
        cost = partial(self.cost_model.cost, metric=self.metric)
        x, k, below = self._bracket(widths_at, cost, target, lo, hi)
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

    # ---- importance ---------------------------------------------------------------------------
    def scores(self, restored: Mapping[str, torch.Tensor] | None = None) -> dict:
        """Filter L1 norm per channel; channels being restored are scored on their backups."""
        l1 = L1Importance()
        out = {g.name: l1(self._modules, g) for g in self.groups}
        for g in self.groups:
            r = (restored or {}).get(g.name)
            if r is None or not r.any():
                continue
            backup_modules = {name: SimpleNamespace(weight=self._backups[f'{name}.weight'])
                              for name, kind in g.members if kind in FILTER_KINDS}
            out[g.name] = torch.where(r, l1(backup_modules, g), out[g.name])
        return out

    def _drop_lowest(self, current, exempt, scores, n_drop):
        masks = {}
        for gi, g in enumerate(self.groups):
            keep = current[g.name].clone()
            k = int(n_drop[gi])
            if k > 0:
                candidates = keep & ~exempt[g.name]
                s = scores[g.name].masked_fill(~candidates, float('inf'))
                keep[torch.argsort(s, stable=True)[:k]] = False
            masks[g.name] = keep
        return masks

    # ---- one step -----------------------------------------------------------------------------
    def select(self, current: dict, exempt: dict, target: float, restored: dict | None = None):
        """Masks (subset of ``current``, superset of ``exempt``) meeting ``target`` if possible.

        ``restored`` channels are in ``current`` but still zero in the weights (they come back
        at commit), so they are scored on their backups. Returns ``(masks, info)``; subclasses
        implement it.
        """
        raise NotImplementedError

    def protect(self, current: Mapping[str, torch.Tensor]) -> dict:
        """Pruned channels whose gradient EMA exceeds ``protect_factor`` x the kept median."""
        restored = {}
        if self.monitor is None:
            return restored
        for gi, g in enumerate(self.groups):
            m = current[g.name]
            if m.all():
                continue
            ema = self.monitor.view(self.monitor.ema, gi).to(m.device)
            seen = self.monitor.view(self.monitor.count, gi).to(m.device) > 0
            kept = ema[m & seen]
            if kept.numel() == 0:
                continue
            bar = self.protect_factor * kept.median()
            r = ~m & seen & (ema > bar) & (ema > 0)
            if r.any():
                restored[g.name] = r
        return restored

    def plan_step(self) -> StepPlan:
        """Decide the next step without changing anything (so ranks can agree first)."""
        if self.step_count >= self.num_steps:
            raise RuntimeError(f'all {self.num_steps} pruning steps are done')
        step = self.step_count + 1
        target = self.target_cost(step)
        restored = self.protect(self.masks) if self.step_count > 0 else {}
        current = {n: m | restored[n] if n in restored else m.clone()
                   for n, m in self.masks.items()}
        exempt = {n: restored.get(n, torch.zeros_like(m)) for n, m in current.items()}
        masks, info = self.select(current, exempt, target, restored)
        cost = self.cost(masks)
        if cost > target and step == self.num_steps and restored:
            # the final mask must meet the target: protected channels compete again
            none = {n: torch.zeros_like(m) for n, m in current.items()}
            masks, info = self.select(current, none, target, restored)
            cost = self.cost(masks)
            info['exemptions_dropped'] = True
        if cost > target and step == self.num_steps:
            raise RuntimeError(f'{self.method}: the last step reaches {self.metric} '
                               f'{cost} > target {target:.0f}; this should have been refused '
                               'by check_reachable()')
        full = {n: restored[n] & masks[n] if n in restored else torch.zeros_like(m)
                for n, m in self.masks.items()}
        return StepPlan(step=step, masks=masks, restored=full, target=target, cost=cost,
                        info=info)

    @torch.no_grad()
    def commit(self, plan: StepPlan) -> dict:
        """Carry out a plan: back up newly pruned channels, restore protected ones, zero the
        pruned ones. Returns ``{group: changed channels}`` (pruned or restored by this step)."""
        changed = {}
        for g in self.groups:
            old, new = self.masks[g.name], plan.masks[g.name].to(self.masks[g.name].device)
            newly, back = old & ~new, ~old & new
            if newly.any():
                self._backup(g, newly)
            if back.any():
                self._restore(g, back)
            if (newly | back).any():
                changed[g.name] = newly | back
        self.masks = {n: m.to(self._device()).clone() for n, m in plan.masks.items()}
        self.protected = {n: m.to(self._device()).clone() for n, m in plan.restored.items()}
        self.apply_masks()
        self.step_count = plan.step
        record = dict(step=plan.step, cost=plan.cost, target=float(plan.target),
                      restored=int(sum(int(m.sum()) for m in plan.restored.values())),
                      **{k: v for k, v in plan.info.items() if isinstance(v, (int, float, bool))})
        self.history.append(record)
        if self.monitor is not None:
            self.monitor.set_active(0 < self.step_count < self.num_steps)
        return changed

    def step(self) -> StepPlan:
        """Plan and commit the next step."""
        plan = self.plan_step()
        self.commit(plan)
        return plan

    # ---- soft masks -----------------------------------------------------------------------------
    def _tensors(self, g: ChannelGroup):
        """(key, module, attr, dim) of every tensor soft pruning zeroes or backs up."""
        for name, kind in g.members:
            if kind not in _ZEROED_KINDS:
                continue
            module = self._modules[name]
            for attr, dim in CHANNEL_PARAMS[kind]:
                if getattr(module, attr, None) is not None:
                    yield f'{name}.{attr}', module, attr, dim

    def _backup(self, g, channels):
        idx = channels.nonzero().flatten()
        for key, module, attr, dim in self._tensors(g):
            t = getattr(module, attr)
            if key not in self._backups:
                self._backups[key] = torch.zeros_like(t, memory_format=torch.contiguous_format)
            self._backups[key].index_copy_(dim, idx, t.detach().index_select(dim, idx))

    def _restore(self, g, channels):
        idx = channels.nonzero().flatten()
        for key, module, attr, dim in self._tensors(g):
            getattr(module, attr).index_copy_(dim, idx, self._backups[key].index_select(dim, idx))

    def apply_masks(self) -> None:
        """Zero every pruned channel (engine's ``apply_channel_masks``) and cache what to zero
        after each optimizer step."""
        apply_channel_masks(self.model, self.groups, self.masks)
        targets = []
        for g in self.groups:
            idx = (~self.masks[g.name]).nonzero().flatten()
            if idx.numel() == 0:
                continue
            for _, module, attr, dim in self._tensors(g):
                affine = getattr(module, 'weight', None) is not None
                if attr.startswith('running_') and (affine or attr != 'running_mean'):
                    continue  # as apply_channel_masks: BN statistics stay (weight = bias = 0)
                targets.append((module, attr, dim, idx.to(getattr(module, attr).device)))
        self._zero_targets = targets

    @torch.no_grad()
    def reapply_masks(self) -> None:
        """Re-zero the pruned channels (after an optimizer step): one ``index_fill_`` each."""
        for module, attr, dim, idx in self._zero_targets:
            getattr(module, attr).index_fill_(dim, idx, 0)

    def record_gradients(self, scale: float = 1.0) -> None:
        """Fold this optimizer step's activation gradients into the EMA (if protective)."""
        if self.monitor is not None and self.monitor.active:
            self.monitor.update(scale)

    def channel_param_slices(self, channels: Mapping[str, torch.Tensor]):
        """``(parameter, dim, index)`` of the filter / BN parameters of the given channels, e.g.
        to clear their optimizer state after a step changed them."""
        out = []
        for g in self.groups:
            if g.name not in channels:
                continue
            idx = channels[g.name].nonzero().flatten()
            for _, module, attr, dim in self._tensors(g):
                t = getattr(module, attr)
                if isinstance(t, nn.Parameter):
                    out.append((t, dim, idx.to(t.device)))
        return out

    # ---- results --------------------------------------------------------------------------------
    def kept_widths(self) -> dict:
        """``{group name: (kept, dense)}``."""
        return {g.name: (int(self.masks[g.name].sum()), g.num_channels) for g in self.groups}

    def slim_copy(self):
        """A physically slimmed deep copy of the model and its channel structure.

        The pruner's model is left as it is (dense shapes, soft masks), so an optimizer built on
        it stays valid; the copy is for export and measurement.
        """
        hooks_on = self.monitor is not None and self.monitor.active
        if hooks_on:
            self.monitor.set_active(False)  # do not deep-copy the gradient hooks
        try:
            slim = copy.deepcopy(self.model)
        finally:
            if hooks_on:
                self.monitor.set_active(True)
        for p in slim.parameters():
            p.grad = None
        apply_channel_masks(slim, self.groups, self.masks)
        structure = slim_model(slim, self.groups, self.masks)
        return slim, structure

    # ---- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Weights-only-loadable state: masks, protected channels, step, EMA statistics and the
        backups of the pruned channels (only their slices)."""
        backups = {}
        for g in self.groups:
            idx = (~self.masks[g.name]).nonzero().flatten()
            if idx.numel() == 0:
                continue
            for key, _, _, dim in self._tensors(g):
                backups[key] = self._backups[key].index_select(dim, idx).cpu()
        return dict(
            method=self.method, metric=self.metric, fraction=self.fraction,
            num_steps=self.num_steps, step=self.step_count,
            groups={g.name: g.num_channels for g in self.groups},
            masks={n: m.cpu().clone() for n, m in self.masks.items()},
            protected={n: m.cpu().clone() for n, m in self.protected.items()},
            backups=backups, history=[dict(h) for h in self.history],
            grad_stats=self.monitor.state_dict() if self.monitor is not None else None)

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict` output; the model weights come from the checkpoint."""
        for key in ('method', 'metric', 'num_steps'):
            if state.get(key) != getattr(self, key):
                raise ValueError(f'pruning state was saved with {key}={state.get(key)!r}, this '
                                 f'run has {key}={getattr(self, key)!r}')
        groups = {g.name: g.num_channels for g in self.groups}
        if dict(state['groups']) != groups:
            raise ValueError('pruning state was saved for other channel groups: '
                             f'{sorted(state["groups"])[:4]}... vs {sorted(groups)[:4]}...')
        device = self._device()
        self.masks = {n: state['masks'][n].to(device).bool() for n in groups}
        self.protected = {n: state['protected'][n].to(device).bool() for n in groups}
        self.step_count = int(state['step'])
        self.history = [dict(h) for h in state.get('history', [])]
        self._backups = {}
        for g in self.groups:
            idx = (~self.masks[g.name]).nonzero().flatten()
            if idx.numel() == 0:
                continue
            for key, module, attr, dim in self._tensors(g):
                t = getattr(module, attr)
                self._backups[key] = torch.zeros_like(t, memory_format=torch.contiguous_format)
                self._backups[key].index_copy_(dim, idx, state['backups'][key].to(t))
        if self.monitor is not None:
            if state.get('grad_stats') is not None:
                self.monitor.load_state_dict(state['grad_stats'])
            self.monitor.set_active(0 < self.step_count < self.num_steps)
        self.apply_masks()


def parse_target(target: Mapping) -> tuple[str, float]:
    """Check ``dict(flops=f)`` / ``dict(params=f)`` / ``dict(channels=f)``; return (metric, f)."""
    if not isinstance(target, Mapping) or len(target) != 1 or next(iter(target)) not in METRICS:
        raise ValueError(f'target must be a dict with one key out of {METRICS} (the fraction to '
                         f'remove), e.g. dict(flops=0.5); got {target!r}')
    metric, fraction = next(iter(target.items()))
    if not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ValueError(f'target {metric}={fraction!r}: the fraction to remove must be in (0, 1)')
    return metric, float(fraction)


class PSAPPruner(StructuredPruner):
    """Protective Self-Adaptive Pruning (our reading; formulas in the module docstring).

    Args:
        adaptive (bool): Per-group ratios from the layer sparsity ``s_g``; False = uniform ratios
            of the kept width (ablation). Defaults to True.
        protective (bool): Protective restoration (ablation switch). Defaults to True.
        sparsity_eps (float): eps of ``s_g``: a weight is "small" below eps x the mean magnitude
            of its layer's kept filters. Defaults to 0.1.
        ratio_floor (float): phi in ``a_g = phi + (1 - phi) s_g / mean(s)``, in [0, 1]: the share
            of every group's ratio that does not depend on its sparsity. Defaults to 0.3.
        **kwargs: See :class:`StructuredPruner`.
    """
    method = 'psap'

    def __init__(self, *args, adaptive: bool = True, protective: bool = True,
                 sparsity_eps: float = 0.1, ratio_floor: float = 0.3, **kwargs) -> None:
        if sparsity_eps <= 0:
            raise ValueError(f'sparsity_eps must be > 0, got {sparsity_eps}')
        if not 0.0 <= ratio_floor <= 1.0:
            raise ValueError(f'ratio_floor must be in [0, 1], got {ratio_floor}')
        self.adaptive = adaptive
        self.sparsity_eps = sparsity_eps
        self.ratio_floor = ratio_floor
        super().__init__(*args, protective=protective, **kwargs)

    @torch.no_grad()
    def layer_sparsity(self, masks: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``s_g`` of every group (float tensor, group order), on the kept filters only."""
        masks = self.masks if masks is None else masks
        out = []
        for g in self.groups:
            idx = masks[g.name].nonzero().flatten()
            small = total = 0
            for name, kind in g.members:
                if kind not in FILTER_KINDS or idx.numel() == 0:
                    continue
                attr, dim = CHANNEL_PARAMS[kind][0]
                w = getattr(self._modules[name], attr).detach()
                w = w.index_select(dim, idx.to(w.device)).abs()
                small += int((w < self.sparsity_eps * w.mean()).sum())
                total += w.numel()
            out.append(small / total if total else 0.0)
        return torch.tensor(out, dtype=torch.float64)

    def layer_weights(self, masks: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``a_g``: how strongly each group is pruned relative to the others (mean about 1)."""
        if not self.adaptive:
            return torch.ones(len(self.groups), dtype=torch.float64)
        s = self.layer_sparsity(masks)
        if s.mean() <= 0:
            return torch.ones_like(s)
        return self.ratio_floor + (1.0 - self.ratio_floor) * s / s.mean()

    def select(self, current, exempt, target, restored=None):
        n = self.widths(current)
        avail = self.widths({k: current[k] & ~exempt[k] for k in current})
        cap = torch.minimum(avail, (n - self.min_keep).clamp(min=0))
        # sparsity of the channels kept through the last step (restored ones are still zero)
        survivors = {k: current[k] & ~exempt[k] for k in current}
        a = self.layer_weights(survivors)

        def widths_at(alpha):
            p = _round_half_up((alpha * a).clamp(max=1.0) * n).clamp(max=cap)
            return _round_up_to(n - p, self.round_to, n)

        positive = a[a > 0]
        hi = float(1.0 / positive.min()) if positive.numel() else 1.0
        alpha, k = self._fit_widths(widths_at, target, 0.0, hi)
        masks = self._drop_lowest(current, exempt, self.scores(restored), n - k)
        info = dict(alpha=alpha, ratio_min=float(((n - k) / n.clamp(min=1)).min()),
                    ratio_max=float(((n - k) / n.clamp(min=1)).max()))
        if self.adaptive:
            info['mean_layer_sparsity'] = float(self.layer_sparsity(survivors).mean())
        return masks, info


class L1UniformPruner(StructuredPruner):
    """L1-norm filter pruning with one ratio for every group (Li et al. 2017).

    Step k prunes, in every group, the ratio rho_k of its *dense* width with the smallest filter
    L1 norms, rho_k the smallest ratio meeting the step's target. If the final target needs a
    ratio that would leave a group with fewer than ``min_keep`` channels, construction fails
    (uniform ratios cannot reach it; use ``psap`` or ``l1_global``).
    """
    method = 'l1_uniform'

    def _uniform_widths(self, rho):
        dense = self._dense_widths()
        return _round_up_to(dense - _round_half_up(torch.tensor(rho, dtype=torch.float64) * dense),
                            self.round_to, dense)

    def check_reachable(self) -> None:
        goal = self.target_cost(self.num_steps)
        cost = partial(self.cost_model.cost, metric=self.metric)
        if cost(self._uniform_widths(1.0)) > goal:
            super().check_reachable()  # the generic message (not even emptying everything)
        rho, widths = self._bisect(self._uniform_widths, cost, goal, 0.0, 1.0)
        low = (widths < self.min_keep).nonzero().flatten()
        if low.numel():
            gi = int(low[0])
            raise ValueError(
                f'l1_uniform: reaching {self.metric} -{self.fraction:.0%} needs a uniform ratio '
                f'of about {rho:.3f} per group, which would keep {int(widths[gi])} of '
                f'{self.groups[gi].num_channels} channels of group {self.groups[gi].name!r} '
                f'(min_keep={self.min_keep}): the ratio would empty the layer; lower the target, '
                "or use 'psap' / 'l1_global', whose per-group ratios differ")
        super().check_reachable()

    def select(self, current, exempt, target, restored=None):
        n = self.widths(current)
        floor = torch.maximum(self.widths(exempt), torch.full_like(n, self.min_keep)).minimum(n)

        def widths_at(rho):
            return self._uniform_widths(rho).clamp(min=floor).minimum(n)

        rho, k = self._fit_widths(widths_at, target, 0.0, 1.0)
        masks = self._drop_lowest(current, exempt, self.scores(restored), n - k)
        return masks, dict(ratio=rho)


class L1GlobalPruner(StructuredPruner):
    """L1-norm filter pruning ranked across all groups.

    Scores are each filter's L1 norm divided by the mean L1 norm of its group's kept filters
    (raw norms grow with fan-in, so unnormalised ranking would empty thin layers first), and
    :func:`~mmrecprune.sparsity.global_channel_masks` drops the lowest until the step's target
    is met; already pruned channels stay pruned.
    """
    method = 'l1_global'

    def select(self, current, exempt, target, restored=None):
        raw = self.scores(restored)
        scores = {}
        for g in self.groups:
            keep = current[g.name]
            mean = raw[g.name][keep].mean() if keep.any() else raw[g.name].new_ones(())
            s = raw[g.name] / mean.clamp_min(1e-12)
            s = s.masked_fill(~keep, float('-inf')).masked_fill(exempt[g.name], float('inf'))
            scores[g.name] = s
        total = sum(g.num_channels for g in self.groups)
        pruned_now = total - int(self.widths(current).sum())

        def masks_at(rho):
            masks = global_channel_masks(scores, rho, self.round_to, self.min_keep)
            return {n: (m & current[n]) | exempt[n] for n, m in masks.items()}

        lo, hi = pruned_now / total, (total - len(self.groups)) / total
        rho, masks = self._bisect(masks_at, lambda m: self.cost(m), target, lo, max(lo, hi))
        return masks, dict(ratio=rho)


STRUCTURED_PRUNERS = {
    'psap': PSAPPruner,
    'l1_uniform': L1UniformPruner,
    'l1_global': L1GlobalPruner,
}


def build_structured_pruner(method: str, *args, **kwargs) -> StructuredPruner:
    """Build ``'psap'``, ``'l1_uniform'`` or ``'l1_global'`` with the given arguments."""
    if method not in STRUCTURED_PRUNERS:
        raise ValueError(f'unknown structured pruning method {method!r}; choose one of '
                         f'{sorted(STRUCTURED_PRUNERS)}')
    return STRUCTURED_PRUNERS[method](*args, **kwargs)
