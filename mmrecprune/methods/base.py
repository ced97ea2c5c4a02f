"""The pruner protocol every method speaks, and the plan a pruning step carries out.

A hook decides *when* (runner events, DDP, checkpoints) and an optimizer wrapper calls the
per-step part; the pruner decides *what*. Steps are two-phase so DDP ranks can agree first:
:meth:`BasePruner.plan` changes nothing, rank 0's plan is broadcast, then every rank
:meth:`~BasePruner.commit`\\ s it.

Every hook drives one family of pruners, declared here as a subclass of :class:`BasePruner`
with everything the hook reads from its pruner (``pruner_protocol`` of the hook):

=====================================  =================================================
protocol                               driven by
=====================================  =================================================
:class:`IterativePruner`               ``LotteryTicketHook`` (rounds of prune + rewind)
:class:`RetrainingFreePruner`          ``OnTheFlyPruningHook`` (one cut after training)
:class:`ChannelPruner`                 ``StructuredPruningHook`` (scheduled channel steps)
=====================================  =================================================

A hook given a pruner of another family refuses it when it is built (see
:func:`family_of`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from mmrecprune.ops import OpsUnavailable
from mmrecprune.sparsity import parse_nm_pattern


@dataclass
class PruningPlan:
    """What one pruning step will do.

    Attributes:
        step (int): The step this plan completes, 1-based: the pruner's
            :attr:`~BasePruner.step_count` once committed.
        masks (dict[str, BoolTensor]): The keep-masks after the step (per parameter name for
            unstructured pruners, per channel group for structured ones).
        restored (dict[str, BoolTensor]): Pruned channels this step brings back (structured).
        target (float | None): The cost budget of the step, if it has one.
        cost (int | None): The cost of the model at ``masks``.
        info (dict): Method-specific numbers for the log and history.
    """
    step: int
    masks: dict
    restored: dict = field(default_factory=dict)
    target: float | None = None
    cost: int | None = None
    info: dict = field(default_factory=dict)


class BasePruner:
    """Protocol of the registered pruners (``mmrecprune.registry.PRUNERS``).

    Built from a config with only the method's arguments (validated in ``__init__``, before a
    runner exists); :meth:`attach` binds the model later. Subclasses implement :meth:`attach`,
    :meth:`plan`, :meth:`commit`, :meth:`state_dict`, :meth:`load_state_dict` and
    :meth:`ticket_content`; the per-step methods default to doing nothing.

    A pruner that a hook drives also implements one of the family protocols below
    (:class:`IterativePruner`, :class:`RetrainingFreePruner`, :class:`ChannelPruner`).

    Attributes:
        kind (str): ``'unstructured'`` (weight masks) or ``'structured'`` (channel masks).
        family (str): The family's name in messages (``'structured'``, ...); ``''`` for a
            pruner of no family, which no hook drives.
        method (str): Name written into tickets and logs.
        model (nn.Module | None): The attached model (None before :meth:`attach`).
        step_count (int): Pruning steps committed so far, the one counter of every pruner
            (an iterative pruner's rounds; :attr:`PruningPlan.step` is the step a plan
            completes). Pruner states store it as ``'step'``.
    """
    kind: ClassVar[str] = 'unstructured'
    family: ClassVar[str] = ''
    method: str = 'base'
    model: object
    step_count: int

    def __init__(self) -> None:
        self.model = None
        self.step_count = 0

    # -- set-up ----------------------------------------------------------------------------
    def attach(self, model, example_input=None) -> None:
        """Bind the pruner to ``model`` (the runner's model, unwrapped)."""
        raise NotImplementedError

    # -- pruning steps -----------------------------------------------------------------------
    def plan(self) -> PruningPlan:
        """Decide the next step without changing anything."""
        raise NotImplementedError

    def commit(self, plan: PruningPlan) -> dict:
        """Carry out ``plan``; return ``{name: changed entries}`` for :meth:`optimizer_slices`."""
        raise NotImplementedError

    @property
    def masks(self) -> dict:
        """The keep-masks in force (what ranks must agree on)."""
        raise NotImplementedError

    def synced_tensors(self) -> dict:
        """The weights ranks must hold identically after a step (digested by the DDP check)."""
        raise NotImplementedError

    def statistics(self) -> list:
        """Tensors DDP ranks average (in place) before :meth:`plan`, e.g. gradient EMAs."""
        return []

    def optimizer_slices(self, changed: dict):
        """Optimizer state to clear after a step: ``(param, dim, index)`` triples, or None for
        all state (e.g. after rewinding every weight)."""
        return None

    # -- around every optimizer step (called by the PruningOptimWrapper) ----------------------
    def regularize(self, loss):
        """Return the loss to back-propagate (add a penalty here). Default: ``loss``."""
        return loss

    def before_optimizer_step(self, scale: float = 1.0) -> None:
        """Gradients are ready (``scale``: the AMP loss scale they carry)."""

    def after_optimizer_step(self) -> None:
        """The optimizer has stepped (e.g. re-apply the masks)."""

    def attach_optimizer(self, optimizer) -> None:
        """A wrapper starts serving this pruner with ``optimizer`` (e.g. mask its state)."""

    # -- checkpoints and export ---------------------------------------------------------------
    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state) -> None:
        raise NotImplementedError

    def ticket_content(self, prefix: str = 'backbone') -> dict:
        """What a ticket of the sub-module ``prefix`` holds, for
        :func:`mmrecprune.tickets.export_ticket`: ``dict(masks=...)`` (unstructured) or
        ``dict(model=slim_model, channel_structure=...)`` (structured), plus ``meta``."""
        raise NotImplementedError


class UnstructuredPruner(BasePruner):
    """Pruners of individual weights: one keep-mask per prunable conv weight
    (:attr:`masks` maps parameter names to bool tensors of the weight's shape).

    Attributes:
        params (dict[str, nn.Parameter]): The prunable weights by parameter name, filled by
            :meth:`attach` (empty before).
        sparsity (float): Fraction of the prunable weights pruned (the target of a
            retraining-free pruner, the fraction reached so far of an iterative one).
    """
    kind = 'unstructured'
    params: dict
    sparsity: float


class IterativePruner(UnstructuredPruner):
    """Rounds of train -> prune -> rewind (driven by ``LotteryTicketHook``): every round ends
    with :meth:`plan` / :meth:`commit`, which prune and rewind the survivors to a stored state.

    Attributes:
        rewind_to (str): ``'pretrained'``, ``'iteration'``, ``'reinit'`` or ``'none'``: what
            :meth:`commit` rewinds to. The hook calls :meth:`snapshot` at
            ``rewind_iter`` for ``'iteration'``.
        rewind_iter (int): The iteration of round 1 whose state ``'iteration'`` rewinds to.
        rewind_state (dict | None): The stored rewind target (None until :meth:`snapshot`).
        seed (int | None): Seed of ``'reinit'``; the hook sets the run's seed where None.
    """
    family = 'iterative unstructured'
    rewind_to: str
    rewind_iter: int
    rewind_state: dict | None
    seed: int | None

    @property
    def round(self) -> int:
        """:attr:`step_count` under the name of earlier releases (a round ends with a step)."""
        return self.step_count

    @property
    def wants_snapshot_at_start(self) -> bool:
        """Whether the rewind target is the state at the start of training (the hook then
        calls :meth:`snapshot` in ``before_train`` of a run that does not resume)."""
        raise NotImplementedError

    def snapshot(self) -> None:
        """Store the model's current state as :attr:`rewind_state`."""
        raise NotImplementedError


class RetrainingFreePruner(UnstructuredPruner):
    """One cut after training, with no fine-tuning (driven by ``OnTheFlyPruningHook``), and
    optionally a penalty during training that prepares it.

    Attributes:
        recovery (str): Fill value of the pruned entries
            (:data:`~mmrecprune.sparsity.RECOVERY_MODES`); the hook also scores ``'zero'``.
        penalty (float | None): Coefficient of the training penalty once warmed up; None for
            a pruner that adds no penalty (the hook then logs none).
        warmup_iters (int): Optimizer steps over which :meth:`coefficient` ramps up.
        iteration (int): Optimizer steps counted by the penalty's schedule.
        last_penalty (float): The penalty of the last :meth:`regularize` call (logged).
    """
    family = 'retraining-free unstructured'
    recovery: str
    penalty: float | None = None
    warmup_iters: int = 0
    iteration: int = 0
    last_penalty: float = 0.0

    @property
    def pruned(self) -> bool:
        """Whether the cut has been made (a run resumed after it has nothing left to do)."""
        raise NotImplementedError

    def plan(self, recovery: str | None = None) -> PruningPlan:
        """The cut, filling pruned entries by ``recovery`` (default :attr:`recovery`)."""
        raise NotImplementedError

    def fold(self) -> None:
        """Turn re-parametrised convs (e.g. hyperspherical) into plain ones (exact)."""
        raise NotImplementedError

    def coefficient(self, iteration: int | None = None) -> float:
        """The penalty's coefficient after ``iteration`` optimizer steps (default: now); 0.0
        without a penalty."""
        return 0.0

    def statistics_of_gap(self, masks: dict | None = None) -> dict:
        """``pruned_magnitude``, ``kept_magnitude`` and ``gap_ratio`` of the weights as the
        forward uses them, split by ``masks`` (default: the masks in force)."""
        raise NotImplementedError


class ChannelPruner(BasePruner):
    """Soft channel pruning on a cost schedule (driven by ``StructuredPruningHook``): step k of
    :attr:`num_steps` brings the cost :attr:`metric` to ``1 - fraction * k / num_steps`` of
    dense; :attr:`masks` maps channel-group names to bool masks of their channels.

    Attributes:
        num_steps (int): Steps of the schedule (the hook schedules as many).
        groups (list[ChannelGroup]): The prunable channel groups, traced by :meth:`attach`.
        metric (str): The cost the target counts: ``'flops'``, ``'params'`` or
            ``'channels'``.
        fraction (float): Fraction of the dense cost removed by the last step.
        cost_model (ChannelCostModel): Costs of any masks
            (``cost_model.dense(metric)`` is the dense cost of a metric).
        dense_cost (int): The dense cost of :attr:`metric`.
    """
    kind = 'structured'
    family = 'structured'
    num_steps: int
    groups: list
    metric: str
    fraction: float
    cost_model: object
    dense_cost: int

    def cost(self, masks: dict | None = None, metric: str | None = None) -> int:
        """The cost (``metric``, default :attr:`metric`) of the model at ``masks`` (default:
        the masks in force)."""
        raise NotImplementedError

    def kept_widths(self) -> dict:
        """``{group name: (kept channels, channels)}`` at the masks in force."""
        raise NotImplementedError

    def finish(self) -> None:
        """Hard-apply the final masks (after the last step, on every rank)."""
        raise NotImplementedError

    # -- slimming during training (``slim_during_training=True``) ---------------------------
    slim_during_training: bool = False

    @property
    def can_slim(self) -> bool:
        """Whether no pruned channel can come back now, so :meth:`slim` may remove them."""
        return False

    @property
    def slimmed(self) -> bool:
        """Whether the model lost channels during training (no longer dense-shaped)."""
        return False

    def slim(self, optimizers=(), copies=()) -> dict:
        """Remove the pruned channels from the model in place if :attr:`can_slim`, slicing
        ``optimizers``' state and the models in ``copies`` along; ``{group: removed}``."""
        return {}

    def slim_like(self, model) -> None:
        """Give a dense copy of the model (same module names) the slimmed model's channels."""

    def slimmed_channels(self) -> dict:
        """``{group name: dense channel indices the model holds}`` of the slimmed groups."""
        return {}


FAMILIES = (IterativePruner, RetrainingFreePruner, ChannelPruner)


def family_of(pruner_cls):
    """The protocol of :data:`FAMILIES` that ``pruner_cls`` implements, or None."""
    return next((f for f in FAMILIES if issubclass(pruner_cls, f)), None)


def check_pattern(pattern, owner):
    """``pattern`` (None or an ``'N:M'`` string, see
    :func:`~mmrecprune.sparsity.parse_nm_pattern`), or ValueError naming ``owner``."""
    if pattern is None:
        return None
    try:
        parse_nm_pattern(pattern)
    except ValueError as err:
        raise ValueError(f'{owner}: pattern must be None (unstructured) or an N:M pattern; '
                         f'{err}') from None
    return pattern


def compiled_functions(compiled_ops, build, owner, without):
    """The kernels ``build()`` returns (:mod:`mmrecprune.ops`) for ``compiled_ops=True``, None
    for False; call it after every other argument is checked, so that a bad one is refused
    before a build. ``without`` says what ``compiled_ops=False`` does instead.

    Raises:
        ValueError: ``compiled_ops`` is not a bool.
        OpsUnavailable: the kernels cannot be built here (the message names what is missing,
            and the fix).
    """
    if not isinstance(compiled_ops, bool):
        raise ValueError(f'compiled_ops must be True or False, got {compiled_ops!r}')
    if not compiled_ops:
        return None
    try:
        return build()
    except OpsUnavailable as error:
        raise OpsUnavailable(
            f'{owner}(compiled_ops=True): the compiled kernels cannot be built here: {error}. '
            f'Install what is missing, or set compiled_ops=False ({without})') from error
