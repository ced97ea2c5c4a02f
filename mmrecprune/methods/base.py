"""The pruner protocol every method speaks, and the plan a pruning step carries out.

A hook decides *when* (runner events, DDP, checkpoints) and an optimizer wrapper calls the
per-step part; the pruner decides *what*. Steps are two-phase so DDP ranks can agree first:
:meth:`BasePruner.plan` changes nothing, rank 0's plan is broadcast, then every rank
:meth:`~BasePruner.commit`\\ s it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mmrecprune.sparsity import parse_nm_pattern


@dataclass
class PruningPlan:
    """What one pruning step will do.

    Attributes:
        step (int): The step (round) this plan completes, 1-based.
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

    Attributes:
        kind (str): ``'unstructured'`` (weight masks) or ``'structured'`` (channel masks).
        method (str): Name written into tickets and logs.
        step_count (int): Steps (rounds) committed so far.
    """
    kind = 'unstructured'
    method = 'base'

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
