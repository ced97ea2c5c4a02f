"""What :class:`~mmrecprune.methods.structured.StructuredPruner` does with the channels it
pruned: removes them from the model being trained (``slim_during_training=True``, see that
module's docstring), and makes the slim and dense copies a ticket is exported from."""
import copy

from mmrecprune.sparsity import apply_channel_masks, slim_model


class SlimmingMixin:
    """:class:`~mmrecprune.methods.base.ChannelPruner`'s slimming protocol and the model copies
    for a pruner that keeps its channel masks in ``self.soft``
    (:class:`~mmrecprune.sparsity.SoftChannelMasks`), with ``model``, ``monitor`` (a
    :class:`~mmrecprune.sparsity.ChannelGradientMonitor` or None), ``gradient_scores``,
    ``protective``, ``slim_during_training``, ``step_count`` and ``num_steps``."""

    # ---- slimming during training -------------------------------------------------------------
    @property
    def can_slim(self) -> bool:
        """Whether :meth:`slim` may remove the pruned channels now: slimming during training is
        on and no pruned channel can come back (no protective restoration, or the last step is
        done)."""
        return (self.slim_during_training and self.soft is not None
                and (not self.protective or self.step_count >= self.num_steps))

    @property
    def slimmed(self) -> bool:
        """Whether the model lost channels during training (it is no longer dense-shaped)."""
        return bool(self.soft is not None and self.soft.present)

    def slim(self, optimizers=(), copies=()) -> dict:
        """Remove the pruned channels from the model, in place, if :attr:`can_slim` (else
        nothing): call it right after a step was committed. ``optimizers``' per-parameter state
        and the models in ``copies`` (e.g. an EMA copy) are sliced along (see
        :meth:`~mmrecprune.sparsity.SoftChannelMasks.slim`). Returns ``{group: channels
        removed}``."""
        if not self.can_slim:
            return {}
        if self.monitor is not None and self.monitor.active:
            raise RuntimeError('slim() while the gradient monitor is active: pruned channels '
                               'could still be restored')
        if self.gradient_scores.sums is not None:
            raise RuntimeError('slim() with gradient scores accumulated since the last step; '
                               'slim right after commit()')
        return self.soft.slim(optimizers, copies)

    def slim_like(self, model) -> None:
        """Give a dense ``model`` with the same module names (e.g. an EMA copy built before a
        resume) the channels the pruner's slimmed model holds."""
        self.soft.slim_like(model)

    def slimmed_channels(self) -> dict:
        """``{group name: dense channel indices the model holds}`` of the slimmed groups."""
        return dict(self.soft.present) if self.soft is not None else {}

    # ---- copies for export ----------------------------------------------------------------------
    def _copy_model(self):
        """A deep copy of the model without the gradient monitor's hooks."""
        hooks_on = self.monitor is not None and self.monitor.active
        if hooks_on:
            self.monitor.set_active(False)  # do not deep-copy the gradient hooks
        try:
            return copy.deepcopy(self.model)
        finally:
            if hooks_on:
                self.monitor.set_active(True)

    def slim_copy(self):
        """A physically slimmed deep copy of the model and its channel structure.

        The pruner's model is left as it is (dense shapes, soft masks), so an optimizer built on
        it stays valid; the copy is for export and measurement.
        """
        slim = self._copy_model()
        for p in slim.parameters():
            p.grad = None
        groups, masks = self.soft.physical_groups(), self.soft.physical_masks()
        apply_channel_masks(slim, groups, masks)
        slim_model(slim, groups, masks)
        return slim, self.soft.structure(slim)

    def dense_copy(self):
        """The pruner's model at dense shapes: itself, or for a model slimmed during training a
        deep copy given its dense widths back (zeros in the removed channels, so it computes
        what the slim model computes)."""
        if not self.slimmed:
            return self.model
        dense = self._copy_model()
        self.soft.expand_like(dense)
        return dense
