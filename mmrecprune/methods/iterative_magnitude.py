"""Iterative magnitude pruning with rewinding: the loop behind RecPrune, IMP and the
self-supervised method (they differ in the training loss, not here). The ranking criterion is
configurable (``importance=``): magnitude by default, Taylor saliency, random, or a plugin's."""
import torch

from mmrecprune.methods.base import (IterativePruner, PruningPlan, check_pattern,
                                    compiled_functions)
from mmrecprune.ops import mask_functions
from mmrecprune.sparsity.reinit import reinitialise
from mmrecprune.registry import CRITERIA, PRUNERS
from mmrecprune.sparsity import (DEFAULT_EXCLUDE, MAGNITUDE_RANKINGS, GradientScores, WeightMasks,
                                 check_criterion, check_masks, init_masks, nm_magnitude_masks,
                                 nm_violations, pack_mask, prunable_parameters, rewind,
                                 sparsity_report, unpack_mask, unscaled_gradients)
from mmrecprune.sparsity.state_checks import (check_gradient_scores, check_int, check_keys,
                                              check_model_state, check_packed_masks, refuse)


def check_reinitialisable(module):
    """Refuse ``rewind_to='reinit'`` on a module whose ``init_weights`` would load weights."""
    cfgs = getattr(module, 'init_cfg', None)
    for cfg in cfgs if isinstance(cfgs, list) else [cfgs]:
        if isinstance(cfg, dict) and 'Pretrained' in str(cfg.get('type', '')):
            raise ValueError(f"rewind_to='reinit' re-initialises the backbone with its "
                             f'init_weights, but its init_cfg loads weights ({cfg}); start the '
                             'run with `load_from` instead of init_cfg=Pretrained')


REWIND_MODES = ('pretrained', 'iteration', 'reinit', 'none')
RANKINGS = MAGNITUDE_RANKINGS
#: The criterion of the unstructured pruners unless ``importance=`` says otherwise: ``|w|``.
DEFAULT_IMPORTANCE = dict(type='L1')


class ElementScoring:
    """What the unstructured pruners share to rank weights by a criterion (``importance=``).

    The criterion scores :attr:`scored_tensors` (default: the prunable weights); a gradient
    criterion's scores are averaged over the optimizer steps since the last reset
    (:class:`~mmrecprune.sparsity.GradientScores`, fed by :meth:`accumulate_scores` at every
    optimizer step).
    """

    def build_importance(self, importance):
        self.importance_cfg = dict(DEFAULT_IMPORTANCE) if importance is None else importance
        self.importance = check_criterion(CRITERIA.build(self.importance_cfg), 'elements',
                                          type(self).__name__)
        self.gradient_scores = GradientScores()

    @property
    def needs_gradients(self):
        """Whether the criterion reads gradients (its scores are averaged over steps)."""
        return bool(getattr(self.importance, 'needs_gradients', False))

    def scored_tensors(self):
        """``{name: tensor}`` the criterion scores, in the order ties are broken."""
        return self.params

    @torch.no_grad()
    def accumulate_scores(self, scale=1.0):
        """Add this step's scores of a gradient criterion (gradients carry the AMP ``scale``)."""
        if self.needs_gradients:
            self.gradient_scores.add(self.importance.element_scores(
                self.scored_tensors(), grads=unscaled_gradients(self.params, scale)))

    def element_scores(self):
        """The criterion's score of every prunable weight: from the tensors now, or averaged
        over the optimizer steps since the last pruning step (gradient criteria)."""
        if self.needs_gradients:
            mean = self.gradient_scores.mean()
            if mean is None:
                raise RuntimeError(
                    f'{type(self).__name__}: importance {type(self.importance).__name__} needs '
                    'gradients, but no optimizer step ran since the last pruning step; train '
                    'before it (or run backward() on a few batches and call '
                    'before_optimizer_step())')
            return mean
        return self.importance.element_scores(self.scored_tensors())

    def importance_meta(self):
        cfg = self.importance_cfg
        return dict(cfg) if isinstance(cfg, dict) else type(cfg).__name__


@PRUNERS.register_module()
class IterativeMagnitudePruner(ElementScoring, IterativePruner):
    """Each round removes ``prune_ratio`` of the surviving prunable weights (global magnitude,
    or the scores of another ``importance``) and rewinds the survivors and the rest of the model
    to the rewind target.

    Args:
        prune_ratio (float): Fraction of the surviving weights removed per round, in (0, 1).
            Defaults to 0.2.
        include / exclude (Sequence[str]): Which conv weights are prunable (fnmatch on parameter
            names, see :func:`~mmrecprune.sparsity.prunable_parameters`). Defaults: backbone
            convs except the stem.
        rewind_to (str): ``'pretrained'`` (the weights at the start of the run), ``'iteration'``
            (after ``rewind_iter`` iterations of round 1: late resetting), ``'reinit'`` (only the
            mask is kept: the backbone is re-initialised by its own ``init_weights``, BN
            statistics reset, with seed ``seed + round``; the rest of the model, e.g. the head,
            returns to its state at the start of the run) or ``'none'``.
        rewind_iter (int): Iteration for ``rewind_to='iteration'``. Defaults to 0.
        ranking (str): ``'global'`` (one magnitude threshold over all prunable layers, as the
            lottery-ticket papers prune conv nets) or ``'layerwise'`` (``prune_ratio`` of every
            layer). Defaults to ``'global'``.
        method (str): Name written into tickets (``'imp'``, ``'recprune'``, ...).
        seed (int, optional): Seed of ``'reinit'``; the hook sets the run's seed if None.
        pattern (str, optional): An N:M pattern, e.g. ``'2:4'``: pruning under the N:M
            constraint (:func:`~mmrecprune.sparsity.nm_magnitude_masks`). The N largest
            surviving weights of every group of M consecutive input channels (of each filter,
            at each kernel tap) are protected, each round prunes ``prune_ratio`` of the
            surviving weights among the others, and once none is left the masks are exactly
            N:M (``prune_ratio=0.2`` reaches ``'2:4'`` in round 4; ``prune_ratio >= 1 - N/M``
            in round 1); input channels past the last whole group stay dense. Tickets of the
            rounds that reach the pattern are of kind ``'nm'`` (meta ``pattern``), earlier ones
            unstructured. Defaults to None: unstructured.
        importance (dict): The criterion ranking the surviving weights, built from
            ``mmrecprune.registry.CRITERIA``: ``dict(type='L1')`` (magnitude ``|w|``, the
            default; ``'L2'`` ranks the same), ``dict(type='Taylor')`` (``|w * dL/dw|``
            averaged over the optimizer steps of the round), ``dict(type='Random', seed=0)``
            (the random-pruning control) or a plugin's own criterion that scores weights.
            Ranking and N:M patterns apply to the scores as they do to magnitudes.
        compiled_ops (bool): Enforce the masks around every optimizer step, and run the
            magnitude selection's pass, with the compiled CPU kernels of :mod:`mmrecprune.ops`
            (built on first use: needs a C++ compiler and ninja; an error here names what is
            missing). The same masks and weights, bit for bit; CUDA and non-float32 weights
            still run eager PyTorch. Defaults to False.
    """
    kind = 'unstructured'

    def __init__(self, prune_ratio=0.2, include=('backbone.*', ), exclude=DEFAULT_EXCLUDE,
                 rewind_to='pretrained', rewind_iter=0, ranking='global', method='imp',
                 seed=None, pattern=None, importance=None, compiled_ops=False):
        super().__init__()
        self.pattern = check_pattern(pattern, type(self).__name__)
        if not isinstance(prune_ratio, (int, float)) or not 0.0 < prune_ratio < 1.0:
            raise ValueError(f'prune_ratio must be in (0, 1), got {prune_ratio!r}')
        if rewind_to not in REWIND_MODES:
            raise ValueError(f'rewind_to must be one of {REWIND_MODES}, got {rewind_to!r}')
        if not isinstance(rewind_iter, int) or rewind_iter < 0:
            raise ValueError(f'rewind_iter must be an int >= 0, got {rewind_iter!r}')
        if ranking not in RANKINGS:
            raise ValueError(f'ranking must be one of {tuple(RANKINGS)}, got {ranking!r}')
        self.ranking = ranking
        self.build_importance(importance)
        self.prune_ratio = prune_ratio
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.rewind_to = rewind_to
        self.rewind_iter = rewind_iter
        self.method = method
        self.seed = seed
        self.params = {}
        self.enforced = None
        self.rewind_state = None  # the whole model state (BN, head) to rewind to
        # built last: a bad argument is refused before the build
        self._functions = compiled_functions(
            compiled_ops, mask_functions, type(self).__name__,
            'the same masks in eager PyTorch, slower per step')
        self.compiled_ops = compiled_ops

    def attach(self, model, example_input=None):
        if self.rewind_to == 'reinit':
            check_reinitialisable(getattr(model, 'backbone', model))
        self.params = prunable_parameters(model, include=self.include, exclude=self.exclude)
        if not self.params:
            raise ValueError(f'no prunable conv weights match include={self.include}, '
                             f'exclude={self.exclude}')
        self.model = model
        self.enforced = WeightMasks(self.params, init_masks(self.params),
                                    functions=self._functions)
        self.gradient_scores.reset()

    @property
    def masks(self):
        return self.enforced.masks

    @property
    def sparsity(self):
        return sparsity_report(self.masks)['sparsity']

    @property
    def wants_snapshot_at_start(self):
        """Whether the rewind target is the state at the start of training."""
        return self.rewind_to in ('pretrained', 'reinit') or (self.rewind_to == 'iteration'
                                                             and self.rewind_iter == 0)

    def snapshot(self):
        """Remember the current model state as the rewind target."""
        self.rewind_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def plan(self):
        """The masks of the next round (ranked by the criterion's scores); changes nothing."""
        scores = self.element_scores()
        if self.pattern is not None:
            masks = nm_magnitude_masks(scores, self.masks, self.pattern, self.prune_ratio,
                                       self.ranking)
        else:
            masks = RANKINGS[self.ranking](scores, self.masks, self.prune_ratio,
                                           functions=self._functions)
        return PruningPlan(step=self.step_count + 1, masks=masks)

    @property
    def pattern_reached(self):
        """Whether every mask now satisfies ``pattern`` (False without one)."""
        return self.pattern is not None and not nm_violations(self.masks, self.pattern)

    @torch.no_grad()
    def commit(self, plan):
        """End the round with ``plan.masks``: rewind the survivors, zero the pruned weights."""
        check_masks(self.params, plan.masks)
        if self.rewind_to != 'none':
            if self.rewind_state is None:
                raise RuntimeError('no rewind target stored before the end of the round')
            self.model.load_state_dict(self.rewind_state)
            if self.rewind_to == 'reinit':
                reinitialise(getattr(self.model, 'backbone', self.model),
                             (self.seed or 0) + plan.step)
            else:
                rewind(self.params, self.rewind_state, plan.masks)
        self.enforced = WeightMasks(self.params, plan.masks, functions=self._functions)
        self.enforced.apply()
        self.step_count = plan.step
        self.gradient_scores.reset()
        return {n: ~m for n, m in self.masks.items()}

    def step(self):
        """End a round on one process: :meth:`plan` then :meth:`commit`."""
        return self.commit(self.plan())

    def synced_tensors(self):
        return self.params

    def statistics(self):
        return self.gradient_scores.statistics()

    def optimizer_slices(self, changed):
        return None  # every weight was rewound: no optimizer state belongs to them any more

    def attach_optimizer(self, optimizer):
        self.enforced.apply()
        self.enforced.mask_optimizer_state(optimizer)

    def before_optimizer_step(self, scale=1.0):
        self.enforced.zero_gradients()
        self.accumulate_scores(scale)

    def after_optimizer_step(self):
        self.enforced.apply()

    def state_dict(self):
        """Plain, weights-only-loadable state (packed masks) for checkpoints."""
        state = dict(step=self.step_count,
                     masks={n: pack_mask(m.cpu()) for n, m in self.masks.items()},
                     rewind_state=self.rewind_state)
        if self.needs_gradients:  # the round's sums so far
            state['gradient_scores'] = self.gradient_scores.state_dict()
        return state

    def check_state(self, state):
        """Refuse (:class:`~mmrecprune.sparsity.PrunerStateError`) a saved state this pruner's
        :meth:`state_dict` would not write for this model; changes nothing."""
        owner = type(self).__name__
        # 'round': the key of checkpoints written before the counter had one name
        check_keys(state, owner, ('masks', ), ('step', 'round', 'rewind_state',
                                               'gradient_scores'))
        if ('step' in state) == ('round' in state):
            raise refuse(owner, 'step', "must be given once (as 'step', or 'round' in "
                         'checkpoints of earlier releases)')
        check_int(state['step'] if 'step' in state else state['round'], owner, 'step')
        check_packed_masks(state['masks'], owner, 'masks',
                           {n: p.shape for n, p in self.params.items()})
        if state.get('rewind_state') is not None:
            check_model_state(state['rewind_state'], owner, 'rewind_state',
                              self.model.state_dict())
        check_gradient_scores(state.get('gradient_scores'), owner, 'gradient_scores',
                              {n: tuple(t.shape) for n, t in self.scored_tensors().items()})

    def load_state_dict(self, state):
        self.check_state(state)
        masks = {n: unpack_mask(bits, self.params[n].shape).to(self.params[n].device)
                 for n, bits in state['masks'].items()}
        self.enforced = WeightMasks(self.params, masks, functions=self._functions)
        self.step_count = state['step'] if 'step' in state else state['round']
        self.rewind_state = state.get('rewind_state')
        device = next(iter(self.params.values())).device
        self.gradient_scores.load_state_dict(state.get('gradient_scores'), device)

    def ticket_content(self, prefix='backbone'):
        start = prefix + '.' if prefix else ''
        meta = dict(method=self.method, step=self.step_count, prune_ratio=self.prune_ratio,
                    rewind_to=self.rewind_to, ranking=self.ranking,
                    importance=self.importance_meta())
        if self.pattern_reached:
            meta['pattern'] = self.pattern  # the ticket is of kind 'nm'
        return dict(masks={n[len(start):]: m for n, m in self.masks.items()
                           if n.startswith(start)}, meta=meta)


# the name of earlier releases, kept for code that imports it
LotteryTicketPruner = IterativeMagnitudePruner
