"""Soft channel pruning on a cost schedule: what structured methods share.

Plain PyTorch, built from the engine: :mod:`~mmrecprune.sparsity.channel_groups` (what is
coupled), an importance criterion (what matters), :class:`~mmrecprune.sparsity.SoftChannelMasks`
and slimming (how to cut), :class:`~mmrecprune.sparsity.CostSchedule` (when and how much), and
the optional :class:`~mmrecprune.sparsity.ChannelGradientMonitor` for protective restoration.
A subclass only implements :meth:`StructuredPruner.select`: which channels a step keeps.

Protective restoration (``protective=True``): the gradient of the loss w.r.t. each channel's
activation is tracked as an EMA ``E_c`` (one update per optimizer step, see the monitor); before
every step after the first, a pruned channel with ``E_c > kappa * median{E_j : j kept in g}``
(``kappa = protect_factor``) is restored from its backup and exempt from that step. The last
step drops the exemptions only if the target cannot be met otherwise; after it nothing is
restored, so the final mask meets the target.

Slimming during training (``slim_during_training=True``): a pruned channel leaves the model
being trained as soon as it can no longer come back. Without protective restoration that is
the moment it is pruned (every step); with it, a pruned channel can be restored before any later
step, so nothing leaves before the last step, after which nothing is restored
(:attr:`StructuredPruner.can_slim`). The hook calls :meth:`StructuredPruner.slim` with the
optimizers and model copies to slice along. Masks, scores and gradient statistics stay indexed
by the dense channels, so the choices equal a soft-mask run's. Slimming and the slim / dense
copies a ticket is exported from live in :mod:`.structured_slimming`.
"""
from __future__ import annotations

from typing import Mapping

import torch

from mmrecprune.methods.base import ChannelPruner, PruningPlan
from mmrecprune.methods.structured_slimming import SlimmingMixin
from mmrecprune.registry import CRITERIA
from mmrecprune.sparsity import (CHANNEL_PARAMS, ChannelCostModel, ChannelGradientMonitor,
                                 CostSchedule, GradientScores, SoftChannelMasks, ZEROED_KINDS,
                                 check_criterion, check_schedule_args, find_channel_groups,
                                 group_importances, unscaled_gradients)
from mmrecprune.sparsity.state_checks import (check_bool_masks, check_float,
                                              check_gradient_scores, check_history, check_int,
                                              check_keys, check_same, refuse)


class StructuredPruner(SlimmingMixin, ChannelPruner):
    """Soft channel pruning on a cost schedule; subclasses decide which channels go.

    Args:
        target (dict): One of ``dict(flops=f)``, ``dict(params=f)``, ``dict(channels=f)``:
            the fraction ``f`` in (0, 1) of that cost to *remove* (of the modules under ``scope``).
            Defaults to ``dict(flops=0.5)``.
        num_steps (int): Pruning steps K; step k brings the cost to ``1 - f * k / K`` of dense.
            Defaults to 3.
        scope (str): Only groups whose filters lie under this module are pruned and only its
            cost is counted. Defaults to ``'backbone'`` (``''``: the whole model).
        prune_residual (bool): Also prune residual / boundary channels (changes block output
            widths). Defaults to False (only channels inside blocks).
        round_to (int): Kept widths are rounded up to a multiple of this. Defaults to 1.
        min_keep (int): Fewest channels a group keeps. Defaults to 1.
        importance (dict): The criterion ranking channels within a step, built from
            ``mmrecprune.registry.CRITERIA``: ``dict(type='L1' | 'L2' | 'BNScale' | 'Taylor' |
            'Random')`` or a plugin's own. Defaults to L1 (filter norm). Gradient criteria
            (Taylor) are averaged over the optimizer steps since the previous pruning step.
        protective (bool): Restore pruned channels whose activation gradient stays large.
            Defaults to False here; :class:`PSAPPruner` defaults to True.
        protect_factor (float): kappa of the restoration rule. Defaults to 1.5.
        grad_momentum (float): beta of the gradient EMA. Defaults to 0.98.
        slim_during_training (bool): Remove pruned channels from the model being trained as
            soon as they cannot come back (see the module docstring), so training steps get
            cheaper with the kept FLOPs; the optimizer state, a DDP wrapper and EMA copies
            follow (``StructuredPruningHook``), and checkpoints hold the slim model.
            Defaults to False (soft masks until the end, dense shapes throughout).

    Raises:
        ValueError: On a bad argument (at construction), or a target that no schedule can reach
            (at :meth:`attach`).
    """
    kind = 'structured'
    method = 'structured'

    def __init__(self, target=None, num_steps=3, scope='backbone', prune_residual=False,
                 round_to=1, min_keep=1, importance=None, protective=False, protect_factor=1.5,
                 grad_momentum=0.98, slim_during_training=False):
        super().__init__()
        self.target = dict(flops=0.5) if target is None else dict(target)
        self.metric, self.fraction = check_schedule_args(self.target, num_steps, round_to,
                                                         min_keep)
        if not isinstance(protect_factor, (int, float)) or protect_factor <= 0:
            raise ValueError(f'protect_factor must be > 0, got {protect_factor!r}')
        if not isinstance(grad_momentum, (int, float)) or not 0.0 <= grad_momentum < 1.0:
            raise ValueError(f'grad_momentum must be in [0, 1), got {grad_momentum!r}')
        self.importance_cfg = dict(type='L1') if importance is None else importance
        self.importance = check_criterion(CRITERIA.build(self.importance_cfg), 'channels',
                                          type(self).__name__)
        self.gradient_scores = GradientScores()
        self.num_steps = num_steps
        self.scope = scope
        self.prune_residual = bool(prune_residual)
        self.round_to = round_to
        self.min_keep = min_keep
        self.protective = bool(protective)
        self.protect_factor = protect_factor
        self.grad_momentum = grad_momentum
        if not isinstance(slim_during_training, bool):
            raise ValueError(f'slim_during_training must be a bool, got '
                             f'{slim_during_training!r}')
        self.slim_during_training = slim_during_training
        self.history = []
        self.groups = []
        self.soft = None
        self.monitor = None

    # ---- set-up -----------------------------------------------------------------------------
    def attach(self, model, example_input):
        """Trace ``model(example_input)`` into channel groups and set up masks and costs."""
        prefix = f'{self.scope}.' if self.scope else ''
        layer_calls = []  # the trace's pass also gives the cost model its shapes
        groups = find_channel_groups(model, example_input, prune_residual=self.prune_residual,
                                     layer_calls=layer_calls)
        self.groups = [g for g in groups if all(
            n.startswith(prefix) for n, k in g.members if k in ZEROED_KINDS)]
        if not self.groups:
            raise ValueError(f'no prunable channel group under {self.scope or "the model"!r} '
                             f'(prune_residual={self.prune_residual}); is it a conv network?')
        self.model = model
        self.modules = dict(model.named_modules())
        self.schedule = CostSchedule(ChannelCostModel(model, self.groups, example_input,
                                                      self.scope, layer_calls),
                                     self.target, self.num_steps, self.round_to, self.min_keep)
        self.cost_model = self.schedule.cost_model
        self.dense_cost = self.schedule.dense_cost
        self.soft = SoftChannelMasks(model, self.groups)
        self.protected = {g.name: torch.zeros_like(m) for g, m in
                          zip(self.groups, self.masks.values())}
        self.monitor = (ChannelGradientMonitor(model, self.groups, self.grad_momentum)
                        if self.protective else None)
        self._member_weights = {
            name: getattr(self.modules[name], CHANNEL_PARAMS[kind][0][0])
            for g in self.groups for name, kind in g.members
            if getattr(self.modules[name], CHANNEL_PARAMS[kind][0][0], None) is not None}
        self.gradient_scores.reset()
        self.check_reachable()

    def check_reachable(self) -> None:
        """Raise ValueError if even the narrowest allowed model misses the final target."""
        self.schedule.check_reachable(len(self.groups), self.prune_residual)

    # ---- costs ------------------------------------------------------------------------------
    @property
    def masks(self):
        return self.soft.masks

    def widths(self, masks: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Kept channels per group (LongTensor, group order, on CPU)."""
        masks = self.masks if masks is None else masks
        return torch.stack([masks[g.name].sum() for g in self.groups]).long().cpu()

    def cost(self, masks: Mapping[str, torch.Tensor] | None = None,
             metric: str | None = None) -> int:
        """Cost of the model as if slimmed to ``masks`` (default: the current masks)."""
        return self.cost_model.cost(self.widths(masks), metric or self.metric)

    def target_cost(self, step: int) -> float:
        return self.schedule.target_cost(step)

    # ---- importance -------------------------------------------------------------------------
    @property
    def needs_gradients(self) -> bool:
        """Whether the criterion reads gradients (its scores are averaged over steps)."""
        return bool(getattr(self.importance, 'needs_gradients', False))

    def scores(self, restored: Mapping[str, torch.Tensor] | None = None) -> dict:
        """The criterion's score per channel; channels being restored are scored on their
        backups (gradient criteria: on what was accumulated)."""
        if self.needs_gradients:
            mean = self.gradient_scores.mean()
            if mean is None:
                raise RuntimeError(f'{type(self.importance).__name__} needs gradients, but no '
                                   'optimizer step ran since the last pruning step (begin=0 '
                                   'prunes before training; use begin >= 1)')
            return {g.name: self.soft.to_dense(g, mean[g.name]) for g in self.groups}
        raw = group_importances(self.modules, self.groups, self.importance)
        out = {g.name: self.soft.to_dense(g, raw[g.name]) for g in self.groups}
        for g in self.groups:
            r = (restored or {}).get(g.name)
            if r is None or not r.any():
                continue
            backups = self.soft.to_dense(g, self.importance(
                self.modules, g, weights=self.soft.backup_weights(g)))
            out[g.name] = torch.where(r, backups, out[g.name])
        return out

    def drop_lowest(self, current, exempt, scores, n_drop):
        """Drop the ``n_drop[g]`` lowest-scored non-exempt kept channels of every group."""
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
        at commit), so they are scored on their backups. Returns ``(masks, info)``.
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

    def plan(self) -> PruningPlan:
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
        return PruningPlan(step=step, masks=masks, restored=full, target=target, cost=cost,
                           info=info)

    @torch.no_grad()
    def commit(self, plan: PruningPlan) -> dict:
        """Carry out a plan: back up newly pruned channels, restore protected ones, zero the
        pruned ones. Returns ``{group: changed channels}`` (pruned or restored by this step)."""
        changed = self.soft.update(plan.masks)
        self.protected = {n: m.to(self.soft.device).clone() for n, m in plan.restored.items()}
        self.step_count = plan.step
        record = dict(step=plan.step, cost=plan.cost, target=float(plan.target),
                      restored=int(sum(int(m.sum()) for m in plan.restored.values())),
                      **{k: v for k, v in plan.info.items() if isinstance(v, (int, float, bool))})
        self.history.append(record)
        if self.monitor is not None:
            self.monitor.set_active(0 < self.step_count < self.num_steps)
        self.gradient_scores.reset()
        return changed

    def step(self) -> PruningPlan:
        """Plan and commit the next step (one process)."""
        plan = self.plan()
        self.commit(plan)
        return plan

    def finish(self) -> None:
        """Hard-apply the final masks (end of training)."""
        self.soft.apply()

    # ---- what ranks and optimizers share ------------------------------------------------------
    def synced_tensors(self):
        prefix = f'{self.scope}.' if self.scope else ''
        return {n: p for n, p in self.model.named_parameters() if n.startswith(prefix)}

    def statistics(self):
        out = [self.monitor.ema] if self.monitor is not None else []
        return out + self.gradient_scores.statistics()

    def optimizer_slices(self, changed):
        return self.soft.param_slices(changed)

    # ---- around optimizer steps ---------------------------------------------------------------
    def before_optimizer_step(self, scale: float = 1.0) -> None:
        """Fold this step's activation gradients into the EMA (if protective) and accumulate
        gradient-based importance (if the criterion needs it)."""
        if self.monitor is not None and self.monitor.active:
            self.monitor.update(scale)
        if self.needs_gradients and self.step_count < self.num_steps:
            grads = unscaled_gradients(self._member_weights, scale)
            with torch.no_grad():
                self.gradient_scores.add({g.name: self.importance(self.modules, g, grads=grads)
                                          for g in self.groups})

    def after_optimizer_step(self) -> None:
        """Re-zero the pruned channels: one ``index_fill_`` each."""
        self.soft.reapply()

    # ---- results --------------------------------------------------------------------------------
    def kept_widths(self) -> dict:
        """``{group name: (kept, dense)}``."""
        return {g.name: (int(self.masks[g.name].sum()), g.num_channels) for g in self.groups}

    def ticket_content(self, prefix='backbone'):
        slim, structure = self.slim_copy()
        start = prefix + '.' if prefix else ''
        return dict(
            model=slim, dense_model=self.dense_copy(),
            channel_structure={k[len(start):]: v for k, v in structure.items()
                               if k.startswith(start)},
            kept_widths=self.kept_widths(),
            meta=dict(method=self.method, step=self.step_count,
                      target=self.target, prune_residual=self.prune_residual,
                      round_to=self.round_to, min_keep=self.min_keep,
                      importance=self.importance_cfg, protective=self.protective,
                      protect_factor=self.protect_factor,
                      kept_channels={n: k for n, (k, _) in self.kept_widths().items()},
                      restored=sum(h.get('restored', 0) for h in self.history)))

    # ---- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Weights-only-loadable state: masks, protected channels, step, EMA statistics, the
        gradient criterion's sums since the last step, the backups of the pruned channels
        (only their slices) and, for a model slimmed during training, the dense channels each
        slimmed group holds (``present``: what a resumed run slims its model to)."""
        soft = self.soft.state_dict()
        return dict(
            method=self.method, metric=self.metric, fraction=self.fraction,
            num_steps=self.num_steps, step=self.step_count,
            groups={g.name: g.num_channels for g in self.groups},
            masks=soft['masks'],
            protected={n: m.cpu().clone() for n, m in self.protected.items()},
            backups=soft['backups'], present=soft['present'],
            history=[dict(h) for h in self.history],
            grad_stats=self.monitor.state_dict() if self.monitor is not None else None,
            gradient_scores=self.gradient_scores.state_dict() if self.needs_gradients else None)

    def check_state(self, state) -> None:
        """Refuse (:class:`~mmrecprune.sparsity.PrunerStateError`) a saved state that this
        pruner's :meth:`state_dict` would not write for this model; changes nothing."""
        owner = type(self).__name__
        check_keys(state, owner, ('method', 'metric', 'num_steps', 'step', 'groups', 'masks',
                                  'protected', 'backups'),
                   ('fraction', 'present', 'history', 'grad_stats', 'gradient_scores'))
        for key in ('method', 'metric', 'num_steps'):
            check_same(state[key], getattr(self, key), owner, key)
        groups = {g.name: g.num_channels for g in self.groups}
        saved = state['groups']
        if not isinstance(saved, dict) or not all(
                type(k) is str and type(v) is int for k, v in saved.items()):
            check_same(saved, groups, owner, 'groups')  # refuses: other types
        if saved != groups:
            raise refuse(owner, 'groups', 'was saved for other channel groups: '
                         f'{sorted(saved)[:4]}... vs {sorted(groups)[:4]}...')
        check_int(state['step'], owner, 'step', 0, self.num_steps)
        if 'fraction' in state:
            check_float(state['fraction'], owner, 'fraction', 0.0)
        check_bool_masks(state['protected'], owner, 'protected', groups)
        check_history(state.get('history', []), owner)
        self.soft.check_state(state, owner)
        if self.monitor is not None and state.get('grad_stats') is not None:
            self.monitor.check_state(state['grad_stats'], owner)
        present = state.get('present') or {}
        check_gradient_scores(state.get('gradient_scores'), owner, 'gradient_scores', {
            n: (len(present[n]) if n in present else w, ) for n, w in groups.items()})

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict` output (checked first by :meth:`check_state`); the model
        weights come from the checkpoint. A state with slimmed groups slims the model first
        (its weights are loaded after)."""
        self.check_state(state)
        groups = {g.name: g.num_channels for g in self.groups}
        self.protected = {n: state['protected'][n].to(self.soft.device) for n in groups}
        self.step_count = state['step']
        self.history = [dict(h) for h in state.get('history', [])]
        if self.monitor is not None:
            if state.get('grad_stats') is not None:
                self.monitor.load_state_dict(state['grad_stats'])
            self.monitor.set_active(0 < self.step_count < self.num_steps)
        self.gradient_scores.load_state_dict(state.get('gradient_scores'), self.soft.device)
        self.soft.load_state_dict(state)
