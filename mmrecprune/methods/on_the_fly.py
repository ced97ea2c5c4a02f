"""Pruning on-the-fly (Liu & Liu): train with unit-norm filters and a gap penalty, then prune
once with no fine-tuning and put a mean value in place of the pruned entries.

Our reading of the abstract (configs/onthefly/README.md measures every choice):

* convs of the backbone are :class:`~mmrecprune.sparsity.HypersphericalConv2d` (built through
  ``conv_cfg=dict(type='mmrecprune.HypersphericalConv')``), so a filter's scale is free and
  only its direction matters;
* during training :meth:`OnTheFlyPruner.regularize` adds ``coefficient(t) * gap_penalty`` (see
  :mod:`mmrecprune.sparsity.gap_penalty`); ``coefficient(t)`` ramps linearly from 0 to
  ``penalty`` over ``warmup_iters`` optimizer steps, then stays;
* at the end, :meth:`~OnTheFlyPruner.commit` folds the convs to plain ``nn.Conv2d`` (exact),
  prunes ``sparsity`` of every layer's smallest weights and fills them with ``recovery``'s mean
  values (:mod:`mmrecprune.sparsity.recovery`), which the ticket (format v2) carries.
"""
import torch

from mmrecprune.methods.base import (PruningPlan, RetrainingFreePruner, check_pattern,
                                    compiled_functions)
from mmrecprune.methods.iterative_magnitude import ElementScoring
from mmrecprune.ops import onthefly_functions
from mmrecprune.registry import PRUNERS
from mmrecprune.sparsity import (DEFAULT_EXCLUDE, MAGNITUDE_RANKINGS, RECOVERY_MODES,
                                 HypersphericalConv2d, WeightMasks, apply_recovery, check_recovery,
                                 fold_conv, gap_penalty, gap_statistics, hyperspherical_convs,
                                 init_masks, nm_magnitude_masks, pack_mask, parse_nm_pattern,
                                 prunable_parameters, target_thresholds, unit_filters, unpack_mask)
from mmrecprune.sparsity.hyperspherical import SharedUnitFilters
from mmrecprune.sparsity.state_checks import (check_choice, check_fill_values,
                                              check_gradient_scores, check_int, check_keys,
                                              check_packed_masks, check_tensor)

RANKINGS = tuple(MAGNITUDE_RANKINGS)


def one_shot_masks(params, sparsity, ranking='layerwise', pattern=None):
    """Keep-masks pruning ``sparsity`` of the weights by magnitude, per layer or globally; with
    an N:M ``pattern``, the N largest of every group of M input channels (the sparsity is
    the pattern's)."""
    if ranking not in MAGNITUDE_RANKINGS:
        raise ValueError(f'ranking must be one of {RANKINGS}, got {ranking!r}')
    if pattern is not None:
        return nm_magnitude_masks(params, init_masks(params), pattern)
    return MAGNITUDE_RANKINGS[ranking](params, init_masks(params), sparsity)


@PRUNERS.register_module()
class OneShotMagnitudePruner(ElementScoring, RetrainingFreePruner):
    """Prune once, with no fine-tuning: ``sparsity`` of the smallest weights (by the magnitude the
    forward uses: unit-norm filters for hyperspherical convs), pruned entries filled with
    ``recovery``'s mean values. On an ordinarily trained model this is the one-shot magnitude
    baseline; :class:`OnTheFlyPruner` adds the hyperspherical training before it.

    The step (:meth:`commit`) folds every hyperspherical conv of the model into a plain conv
    first (exact), so the ticket is an ordinary backbone. If training continues afterwards the
    pruned entries keep their fill values (gradients masked, values put back after each step).

    Args:
        sparsity (float): Fraction of every prunable layer's weights pruned, in (0, 1).
            Defaults to 0.5.
        recovery (str): Fill value of pruned entries, one of
            :data:`~mmrecprune.sparsity.RECOVERY_MODES`. Defaults to ``'zero'``.
        ranking (str): ``'layerwise'`` (the fraction of each layer) or ``'global'`` (one
            threshold). Defaults to ``'layerwise'``.
        include / exclude (Sequence[str]): Prunable conv weights (fnmatch on parameter names).
            Defaults: backbone convs except the stem (``conv1.*``, ``stem.*``).
        pattern (str, optional): An N:M pattern, e.g. ``'2:4'``: every group of M consecutive
            input channels (of each filter, at each kernel tap) keeps its N largest weights
            (:func:`~mmrecprune.sparsity.nm_magnitude_masks`; input channels past the last
            whole group stay dense), and the ticket is of kind ``'nm'``. ``sparsity`` must then
            be ``1 - N / M`` (the default 0.5 fits ``'2:4'``) and ``recovery`` ``'zero'`` (the
            sparse kernels skip zeros). Defaults to None: unstructured.
        importance (dict): The criterion ranking the weights (see
            :class:`~mmrecprune.methods.IterativeMagnitudePruner`): magnitude by default
            (``dict(type='L1')``), ``dict(type='Taylor')`` (averaged over every optimizer step
            before the cut: train, or run backward on a few batches and call
            :meth:`before_optimizer_step`), ``dict(type='Random')`` or a plugin's own. It
            scores the weights as the forward uses them (unit-norm filters).
    """
    kind = 'unstructured'
    method = 'oneshot'

    def __init__(self, sparsity=0.5, recovery='zero', ranking='layerwise',
                 include=('backbone.*', ), exclude=DEFAULT_EXCLUDE, pattern=None,
                 importance=None):
        super().__init__()
        self.build_importance(importance)
        if (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float))
                or not 0.0 < sparsity < 1.0):
            raise ValueError(f'sparsity must be a fraction in (0, 1), got {sparsity!r}')
        if ranking not in RANKINGS:
            raise ValueError(f'ranking must be one of {RANKINGS}, got {ranking!r}')
        self.pattern = check_pattern(pattern, type(self).__name__)
        if pattern is not None:
            n, m = parse_nm_pattern(pattern)
            if abs(sparsity - (1 - n / m)) > 1e-9:
                raise ValueError(f'{type(self).__name__}: pattern {pattern!r} prunes '
                                 f'{1 - n / m:.4g} (1 - N/M) of every group; sparsity='
                                 f'{sparsity!r} does not match it: set sparsity={1 - n / m:.4g}'
                                 ' or pattern=None')
            if recovery != 'zero':
                raise ValueError(f'{type(self).__name__}: pattern {pattern!r} needs '
                                 f"recovery='zero' (N:M tickets hold zeros, which the sparse "
                                 f'kernels skip), got {recovery!r}')
        self.sparsity = float(sparsity)
        self.recovery = check_recovery(recovery)
        self.ranking = ranking
        self.include, self.exclude = tuple(include), tuple(exclude)
        self.params = {}
        self._convs = {}
        self._masks = None
        self.fill_values = {}
        self.enforced = None  # WeightMasks (with fill values) once pruned

    # -- set-up ----------------------------------------------------------------------------
    def attach(self, model, example_input=None):
        params = prunable_parameters(model, include=self.include, exclude=self.exclude)
        if not params:
            raise ValueError(f'{type(self).__name__}: no prunable conv weights match '
                             f'include={self.include}, exclude={self.exclude}')
        modules = dict(model.named_modules())
        self.model = model
        self.params = params
        self._convs = {n: modules[n.rsplit('.', 1)[0]] for n in params}
        self.gradient_scores.reset()

    @property
    def pruned(self):
        """Whether the pruning step has been taken."""
        return self._masks is not None

    # -- the one pruning step --------------------------------------------------------------
    @torch.no_grad()
    def unit_weights(self):
        """The weights as the forward uses them (unit-norm filters where hyperspherical)."""
        return {n: unit_filters(p) if isinstance(self._convs[n], HypersphericalConv2d) else p
                for n, p in self.params.items()}

    def fold(self):
        """Fold every hyperspherical conv of the model (the stem too) into a plain conv, in
        place; the model computes the same. Returns how many were folded."""
        convs = hyperspherical_convs(self.model)
        for conv in convs.values():
            fold_conv(conv)
        return len(convs)

    def scored_tensors(self):
        return self.unit_weights()

    def plan(self, recovery=None):
        masks = one_shot_masks(self.element_scores(), self.sparsity, self.ranking, self.pattern)
        recovery = check_recovery(recovery or self.recovery)
        if self.pattern is not None and recovery != 'zero':
            raise ValueError(f'{type(self).__name__}: an N:M cut ({self.pattern!r}) fills its '
                             f"pruned entries with zeros, not {recovery!r}")
        return PruningPlan(step=self.step_count + 1, masks=masks,
                           info=dict(recovery=recovery))

    @torch.no_grad()
    def commit(self, plan):
        """Fold (exact), prune ``plan.masks``, fill pruned entries with the plan's recovery."""
        self.fold()
        self._masks = {n: m.to(self.params[n].device) for n, m in plan.masks.items()}
        self.fill_values = apply_recovery(self.params, self._masks, plan.info['recovery'])
        self.enforced = WeightMasks(self.params, self._masks, self.fill_values)
        self.recovery = plan.info['recovery']
        self.step_count = plan.step
        return {n: ~m for n, m in self._masks.items()}

    def step(self):
        """The pruning step on one process: :meth:`plan` then :meth:`commit`."""
        return self.commit(self.plan())

    def statistics_of_gap(self, masks=None):
        """Mean scaled magnitude of the entries ``masks`` (default: the cut's masks now) prune /
        keep, and their ratio."""
        units = self.unit_weights()
        if masks is None:
            masks = one_shot_masks(units, self.sparsity, self.ranking)
        return gap_statistics(list(units.values()), [masks[n] for n in units])

    @property
    def masks(self):
        return self._masks if self._masks is not None else init_masks(self.params)

    def synced_tensors(self):
        return self.params

    def statistics(self):
        return self.gradient_scores.statistics()

    def optimizer_slices(self, changed):
        return None  # every pruned weight changed value: no optimizer state belongs to it

    # -- training after the step keeps the pruned entries at their fill values --------------
    def before_optimizer_step(self, scale=1.0):
        if self.enforced is not None:
            self.enforced.zero_gradients()
        else:
            self.accumulate_scores(scale)  # a gradient criterion's scores until the cut

    def after_optimizer_step(self):
        if self.enforced is not None:
            self.enforced.apply()

    # -- checkpoints and export -------------------------------------------------------------
    def state_dict(self):
        state = dict(step=self.step_count, recovery=self.recovery,
                     masks=None if self._masks is None else
                     {n: pack_mask(m.cpu()) for n, m in self._masks.items()},
                     fill_values={n: f.cpu() for n, f in self.fill_values.items()})
        if self.needs_gradients and self._masks is None:  # the sums so far
            state['gradient_scores'] = self.gradient_scores.state_dict()
        return state

    def check_state(self, state, more=()):
        """Refuse (PrunerStateError) what :meth:`state_dict` would not write; change nothing."""
        owner, keys = type(self).__name__, ('step', 'recovery', 'masks', 'fill_values')
        check_keys(state, owner, (), keys + ('gradient_scores', ) + more)
        check_int(state.get('step', 0), owner, 'step')
        check_choice(state.get('recovery', self.recovery), owner, 'recovery', RECOVERY_MODES)
        shapes, cut = {n: p.shape for n, p in self.params.items()}, state.get('masks')
        if cut is not None:
            check_packed_masks(cut, owner, 'masks', shapes)
        check_fill_values(state.get('fill_values') or {}, owner, 'fill_values',
                          {} if cut is None else shapes)
        check_gradient_scores(state.get('gradient_scores'), owner, 'gradient_scores', shapes)

    def load_state_dict(self, state):
        self.check_state(state)
        self.step_count = state.get('step', 0)
        self.recovery = state.get('recovery', self.recovery)
        self.gradient_scores.load_state_dict(state.get('gradient_scores'),
                                             next(iter(self.params.values())).device)
        if state.get('masks') is not None:
            self.fold()
            self._masks = {n: unpack_mask(b, self.params[n].shape).to(self.params[n].device)
                           for n, b in state['masks'].items()}
            self.fill_values = {n: f.to(self.params[n].device)
                                for n, f in state.get('fill_values', {}).items()}
            self.enforced = WeightMasks(self.params, self._masks, self.fill_values)

    def ticket_meta(self):
        meta = dict(method=self.method, step=self.step_count, target_sparsity=self.sparsity,
                    recovery=self.recovery, ranking=self.ranking,
                    importance=self.importance_meta())
        if self.pattern is not None:
            meta['pattern'] = self.pattern  # the ticket is of kind 'nm'
        return meta

    def ticket_content(self, prefix='backbone'):
        if self._masks is None:
            raise RuntimeError(f'{type(self).__name__}: no ticket before the pruning step')
        if hyperspherical_convs(self.model):
            raise RuntimeError(f'{type(self).__name__}: the model still has hyperspherical '
                               'convs; fold() before exporting')
        start = prefix + '.' if prefix else ''
        strip = len(start)
        return dict(masks={n[strip:]: m for n, m in self._masks.items() if n.startswith(start)},
                    fill_values={n[strip:]: f for n, f in self.fill_values.items()
                                 if n.startswith(start)},
                    meta=self.ticket_meta())


@PRUNERS.register_module()
class OnTheFlyPruner(OneShotMagnitudePruner):
    """Hyperspherical training with a gap penalty, then :class:`OneShotMagnitudePruner`'s step.

    Args:
        sparsity (float): Fraction p of every prunable layer's weights the penalty pushes to
            zero and the step prunes, in (0, 1). Defaults to 0.5.
        penalty (float): Coefficient of the gap penalty once warmed up (0: hyperspherical
            training alone). Defaults to 10.0 (configs/onthefly/README.md, "penalty").
        margin (float): Hinge margin of the kept weights, on the scaled magnitude (root mean
            square 1 per layer). Defaults to 0.5.
        warmup_iters (int): Optimizer steps over which the coefficient ramps up from 0.
            Defaults to 0.
        update_interval (int): Optimizer steps between re-selections of the target sets.
            Defaults to 10.
        recovery (str): Fill value of pruned entries. Defaults to ``'filter_abs_signed'``.
        ranking, include, exclude: as :class:`OneShotMagnitudePruner`.
        compiled_ops (bool): Compute the unit filters and the gap penalty with the compiled CPU
            kernels of :mod:`mmrecprune.ops` (built on first use: needs a C++ compiler and
            ninja; an error here names what is missing). The same values to float rounding;
            CUDA and non-float32 weights still run eager PyTorch. Defaults to False.
    """
    method = 'onthefly'

    def __init__(self, sparsity=0.5, penalty=10.0, margin=0.5, warmup_iters=0,
                 update_interval=10, recovery='filter_abs_signed', ranking='layerwise',
                 include=('backbone.*', ), exclude=DEFAULT_EXCLUDE, compiled_ops=False):
        super().__init__(sparsity, recovery, ranking, include, exclude)
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or penalty < 0:
            raise ValueError(f'penalty must be a number >= 0, got {penalty!r}')
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
            raise ValueError(f'margin must be a number >= 0, got {margin!r}')
        for name, value, low in (('warmup_iters', warmup_iters, 0),
                                 ('update_interval', update_interval, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f'{name} must be an int >= {low}, got {value!r}')
        # built last: a bad argument is refused before the build
        self._functions = compiled_functions(
            compiled_ops, onthefly_functions, 'OnTheFlyPruner',
            'the same training in eager PyTorch, slower per step')
        self.compiled_ops = compiled_ops
        self.penalty = float(penalty)
        self.margin = float(margin)
        self.warmup_iters = warmup_iters
        self.update_interval = update_interval
        self.iteration = 0  # optimizer steps taken: the penalty schedule's clock
        self.thresholds = None
        self._thresholds_at = None
        self._last_penalty = None  # a detached tensor: read (a device sync) only when logged
        self._shared = None  # SharedUnitFilters of the attached model until the cut
        self._conv_names = []

    def attach(self, model, example_input=None):
        super().attach(model, example_input)
        plain = sorted(n for n, c in self._convs.items()
                       if not isinstance(c, HypersphericalConv2d))
        if plain:
            hint = ('none of them is: build the backbone with conv_cfg=dict(type='
                    '"mmrecprune.HypersphericalConv") (see configs/onthefly)'
                    if len(plain) == len(self.params) else
                    'exclude them or build them with the hyperspherical conv_cfg')
            raise ValueError(f'OnTheFlyPruner: the prunable convs must be hyperspherical; '
                             f'{len(plain)} of {len(self.params)} are plain (e.g. {plain[:3]}); '
                             + hint)
        # the convs' forward and the penalty use the same unit filters, normalised once a step
        if self._shared is not None:
            self._shared.remove()
        self._shared = SharedUnitFilters(model, self._functions)
        self._shared.penalty_request = self._penalty_request
        self._conv_names = [n.rsplit('.', 1)[0] for n in self.params]

    def fold(self):
        if self._shared is not None:  # folded convs normalise nothing
            self._shared.remove()
            self._shared = None
        return super().fold()

    # -- the penalty (every backward, through the optimizer wrapper) ------------------------
    def coefficient(self, iteration=None):
        """The penalty's coefficient after ``iteration`` optimizer steps (default: now)."""
        t = self.iteration if iteration is None else iteration
        if self.warmup_iters == 0:
            return self.penalty
        return self.penalty * min(1.0, t / self.warmup_iters)

    def _select_targets(self, units=None):
        """Re-select the target sets when due (every ``update_interval`` steps)."""
        if self._thresholds_at is None or (self.iteration % self.update_interval == 0
                                           and self._thresholds_at != self.iteration):
            self.thresholds = target_thresholds(list(self.params.values()), self.sparsity,
                                                units, self._functions)
            self._thresholds_at = self.iteration

    def _penalty_request(self):
        """What the shared unit filters ask before a forward with gradients: the penalty's
        convs, borders and margin, to compute it in the normalisation's node
        (``compiled_ops=True``), or None (no penalty this step)."""
        if self.pruned or self.penalty == 0 or self.coefficient() == 0:
            return None
        self._select_targets()  # the same weights, before the forward instead of after it
        return self._conv_names, self.thresholds, self.margin

    def regularize(self, loss):
        if self.pruned or self.penalty == 0:
            return loss
        # compiled_ops: the penalty the normalisation's node computed in the forward
        penalty = None if self._shared is None else self._shared.penalty(self._conv_names)
        if penalty is None:
            units = None if self._shared is None else self._shared.units(self._conv_names)
            self._select_targets(units)
        coefficient = self.coefficient()
        if coefficient == 0:
            return loss
        if penalty is None:
            penalty = gap_penalty(list(self.params.values()), self.thresholds, self.margin,
                                  units, self._functions)
        self._last_penalty = penalty.detach()
        return loss + coefficient * penalty.to(loss.dtype)

    @property
    def last_penalty(self):
        """The gap penalty (without its coefficient) of the last :meth:`regularize`; 0.0
        before the first."""
        return 0.0 if self._last_penalty is None else float(self._last_penalty)

    def after_optimizer_step(self):
        if self.pruned:
            super().after_optimizer_step()
        else:
            self.iteration += 1

    def state_dict(self):
        return dict(super().state_dict(), iteration=self.iteration,
                    thresholds=None if self.thresholds is None else self.thresholds.cpu(),
                    thresholds_at=self._thresholds_at)

    def check_state(self, state, more=('iteration', 'thresholds', 'thresholds_at')):
        super().check_state(state, more)
        owner = type(self).__name__
        at = check_keys(state, owner, more, state)['thresholds_at']
        if state['thresholds'] is not None:
            check_tensor(state['thresholds'], owner, 'thresholds', 'float', (len(self.params), ))
        check_int(state['iteration'], owner, 'iteration')
        if at is not None:  # the iteration the thresholds were selected at
            check_int(at, owner, 'thresholds_at', 0, state['iteration'])

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.iteration = state['iteration']
        self.thresholds = state.get('thresholds')
        self._thresholds_at = state.get('thresholds_at')

    def ticket_meta(self):
        return dict(super().ticket_meta(), penalty=self.penalty, margin=self.margin,
                    warmup_iters=self.warmup_iters, iterations=self.iteration)
