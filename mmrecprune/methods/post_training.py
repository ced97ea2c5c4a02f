"""Post-training structured pruning: slim a trained network from a few hundred calibration
images, with no training.

One cut to the FLOPs (or params, channels) target, chosen by a channel criterion with the
structured baselines' selection (:class:`~.l1_baselines.L1GlobalPruner` or
:class:`~.l1_baselines.L1UniformPruner`, one step), then optional recovery, all from
calibration data:

1. reconstruction of the layers that read cut channels
   (:func:`~mmrecprune.sparsity.reconstruct_consumers`): ``'mean'`` (mean-value recovery),
   ``'least_squares'`` (re-fitted weights) or ``'least_squares+mean'`` (both);
2. BN recalibration (:func:`~mmrecprune.sparsity.recalibrate_batchnorm`).

``tools/prune_post_training.py`` runs it on a checkpoint; ``configs/posttrain/README.md``
compares the recovery variants and cites the methods it builds on.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch

from mmrecprune.methods.base import BasePruner, PruningPlan
from mmrecprune.methods.l1_baselines import L1GlobalPruner, L1UniformPruner
from mmrecprune.registry import PRUNERS
from mmrecprune.sparsity.activation_importance import consumer_input_energy
from mmrecprune.sparsity.bn_recalibration import recalibrate_batchnorm
from mmrecprune.sparsity.state_checks import check_bool_masks, check_int, check_keys, check_same
from mmrecprune.sparsity.least_squares import (check_reconstruction, following_norms,
                                               reconstruct_consumers)

#: channel selection: one ranking across groups, or one ratio for every group
RANKINGS = dict(global_=L1GlobalPruner, uniform=L1UniformPruner)


@PRUNERS.register_module()
class PostTrainingPruner(BasePruner):
    """One structured cut of a trained network, recovered from calibration data.

    Args:
        target (dict): ``dict(flops=f)``, ``dict(params=f)`` or ``dict(channels=f)``: the
            fraction ``f`` in (0, 1) of that cost to remove (of the modules under ``scope``).
            Defaults to ``dict(flops=0.5)``.
        scope (str): Only groups under this module are cut, only its cost counted. Defaults to
            ``'backbone'``.
        prune_residual (bool): Also cut residual / boundary channels. Defaults to False.
        round_to (int): Kept widths are multiples of this. Defaults to 1.
        min_keep (int): Fewest channels a group keeps. Defaults to 1.
        importance (dict): The criterion (``mmrecprune.registry.CRITERIA``): ``'L1'``
            (default), ``'L2'``, ``'BNScale'``, ``'Random'``, ``'Activation'`` (RMS input
            activation times consumer weight norm; needs the calibration batches)...
        ranking (str): ``'global'`` (scores normalised per group, ranked across groups;
            default) or ``'uniform'`` (one ratio for every group).
        reconstruction (str | None): ``None`` (cut only), ``'mean'``, ``'least_squares'`` or
            ``'least_squares+mean'`` (default).
        bn_recalibration (bool): Re-estimate the BN statistics last. Defaults to False: after
            the least-squares re-fit it changed top-1 by -0.08 / -0.07 points on the embedded
            classifier (3 seeds, -25 % / -50 % FLOPs, configs/posttrain/README.md); it is
            the recovery to use with ``reconstruction=None``.
        ridge (float | str): Ridge of the least-squares fit, relative to the mean diagonal
            of ``X^T X``, or ``'auto'`` (default: chosen per layer on held-out calibration
            batches, see :func:`~mmrecprune.sparsity.least_squares.select_ridge`).
        positions_per_image (int | None): Output positions per image sampled by the fit.
            Defaults to 64 (None: all).
        seed (int): Seed of the position sampling. Defaults to 0.
    """
    kind = 'structured'
    method = 'post_training'

    def __init__(self, target=None, scope='backbone', prune_residual=False, round_to=1,
                 min_keep=1, importance=None, ranking='global', reconstruction='least_squares+mean',
                 bn_recalibration=False, ridge='auto', positions_per_image=64, seed=0):
        super().__init__()
        if ranking not in ('global', 'uniform'):
            raise ValueError(f"ranking must be 'global' or 'uniform', got {ranking!r}")
        self.reconstruction = check_reconstruction(reconstruction)
        if ridge != 'auto' and (not isinstance(ridge, (int, float)) or ridge < 0):
            raise ValueError(f"ridge must be 'auto' or a number >= 0, got {ridge!r}")
        if positions_per_image is not None and (not isinstance(positions_per_image, int)
                                                or positions_per_image < 1):
            raise ValueError(f'positions_per_image must be None or an int >= 1, got '
                             f'{positions_per_image!r}')
        self.ranking = ranking
        self.bn_recalibration = bool(bn_recalibration)
        self.ridge = ridge if ridge == 'auto' else float(ridge)
        self.positions_per_image = positions_per_image
        self.seed = int(seed)
        selector = RANKINGS['global_' if ranking == 'global' else 'uniform']
        # the selection (and every argument check) is the structured baselines', one step
        self.selector = selector(target=target, num_steps=1, scope=scope,
                                 prune_residual=prune_residual, round_to=round_to,
                                 min_keep=min_keep, importance=importance)
        self.target = self.selector.target
        self.scope = scope
        self.dense = None
        self.norms = {}
        self.report = {}
        self.calibration_images = 0

    # ---- set-up -----------------------------------------------------------------------------
    def attach(self, model, example_input):
        """Trace ``model(example_input)`` into channel groups; keep a dense copy (the
        reconstruction's reference)."""
        self.selector.attach(model, example_input)
        self.model = model
        self.dense = copy.deepcopy(model)
        self.norms = following_norms(model, example_input)

    @property
    def groups(self):
        return self.selector.groups

    @property
    def masks(self):
        return self.selector.masks

    @property
    def needs_calibration_for_ranking(self) -> bool:
        return bool(getattr(self.selector.importance, 'needs_calibration', False))

    def cost(self, masks=None, metric=None):
        return self.selector.cost(masks, metric)

    def kept_widths(self):
        return self.selector.kept_widths()

    # ---- the cut ----------------------------------------------------------------------------
    def calibrate_ranking(self, batches, forward=None, progress=None) -> None:
        """Collect a data-driven criterion's statistics (a no-op for weight criteria)."""
        if self.needs_calibration_for_ranking:
            self.selector.importance.statistics = consumer_input_energy(
                self.dense, self.groups, batches, forward, progress)

    def plan(self) -> PruningPlan:
        """The cut: which channels every group keeps (nothing changes yet)."""
        if self.step_count:
            raise RuntimeError('post-training pruning cuts once; this pruner has cut already')
        return self.selector.plan()

    def commit(self, plan: PruningPlan) -> dict:
        """Zero the cut channels (soft masks: shapes stay until :meth:`ticket_content`)."""
        changed = self.selector.commit(plan)
        self.step_count = 1
        return changed

    def recover(self, batches: Sequence[Any], forward: Callable | None = None,
                progress: Callable[[int], None] | None = None) -> dict:
        """Reconstruction, then BN recalibration, as configured, on ``batches``.

        Returns:
            dict: The reconstruction report per consumer layer (empty without one).
        """
        batches = list(batches)
        if not self.step_count:
            raise RuntimeError('recover() comes after the cut (plan / commit)')
        if self.reconstruction is not None:
            self.report = reconstruct_consumers(
                self.dense, self.model, self.groups, self.masks, batches, self.reconstruction,
                ridge=self.ridge, positions_per_image=self.positions_per_image,
                norms=self.norms, forward=forward, progress=progress, seed=self.seed)
        if self.bn_recalibration:
            recalibrate_batchnorm(self.model, batches, forward, progress)
        self.calibration_images = sum(int(b.shape[0]) if isinstance(b, torch.Tensor)
                                      else len(b) for b in batches)
        return self.report

    def prune(self, batches: Sequence[Any], forward: Callable | None = None,
              progress: Callable[[int], None] | None = None) -> PruningPlan:
        """Calibrate the criterion if it needs data, cut, recover: the whole method."""
        batches = list(batches)
        self.calibrate_ranking(batches, forward, progress)
        plan = self.plan()
        self.commit(plan)
        self.recover(batches, forward, progress)
        return plan

    @property
    def calibration_passes(self) -> int:
        """Passes over the calibration batches still to come (for progress bars): before the
        cut, the criterion's (if it reads data) and at most one per group plus BN
        recalibration; after it, exactly those of :meth:`recover`."""
        cut = sum(1 for g in self.groups if not self.masks[g.name].all()) \
            if self.step_count else len(self.groups)
        return (int(self.needs_calibration_for_ranking and not self.step_count)
                + cut * (self.reconstruction is not None) + int(self.bn_recalibration))

    @property
    def recovery(self) -> str:
        """The recovery as one word for tickets and logs, e.g. ``'least_squares+mean+bn'``."""
        parts = [self.reconstruction] if self.reconstruction else []
        parts += ['bn'] if self.bn_recalibration else []
        return '+'.join(parts) or 'none'

    # ---- results ------------------------------------------------------------------------------
    def slim_copy(self):
        """A physically slimmed copy of the pruned model and its channel structure."""
        return self.selector.slim_copy()

    def synced_tensors(self):
        return self.selector.synced_tensors()

    def ticket_content(self, prefix='backbone'):
        content = self.selector.ticket_content(prefix)
        meta = content['meta']
        content['meta'] = dict(
            method=self.method, step=self.step_count,
            target=self.target, prune_residual=meta['prune_residual'],
            round_to=meta['round_to'], min_keep=meta['min_keep'],
            importance=meta['importance'], ranking=self.ranking, recovery=self.recovery,
            kept_channels=meta['kept_channels'])
        return content

    def state_dict(self) -> dict:
        """The cut (masks per group) and the step: tensors and plain values only."""
        return dict(method=self.method, step=self.step_count,
                    masks={n: m.cpu().clone() for n, m in self.masks.items()})

    def check_state(self, state) -> None:
        """Refuse (:class:`~mmrecprune.sparsity.PrunerStateError`) a saved state this
        pruner's :meth:`state_dict` would not write for this model; changes nothing."""
        owner = type(self).__name__
        check_keys(state, owner, ('method', 'step', 'masks'))
        check_same(state['method'], self.method, owner, 'method')
        check_int(state['step'], owner, 'step', 0, 1)
        check_bool_masks(state['masks'], owner, 'masks',
                         {g.name: g.num_channels for g in self.groups})

    def load_state_dict(self, state) -> None:
        self.check_state(state)
        self.step_count = state['step']
        if self.step_count:
            self.selector.soft.update({n: m.to(self.selector.soft.device).bool()
                                       for n, m in state['masks'].items()})
