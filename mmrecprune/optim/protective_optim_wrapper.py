"""Optimizer wrappers for soft structured pruning with gradient supervision (PSAP).

Which channels are pruned is decided by a pruner from :mod:`mmrecprune.methods.psap` (a hook
calls it); the wrapper only serves it around every optimizer step, so any MMEngine training loop,
gradient accumulation and AMP included, keeps the soft masks and feeds the protection rule.
"""
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mmrecprune.registry import OPTIM_WRAPPERS


class ProtectiveUpdateMixin:
    """Soft-pruning logic shared by :class:`ProtectiveOptimWrapper` and its AMP variant.

    Around every ``step()`` (once per accumulation window):

    1. the pruner folds the per-channel activation-gradient norms recorded during the backward
       passes since the last step into its EMA (one vectorised update over all channels; only
       while protection is active, i.e. between the first and the last pruning step);
    2. the wrapped optimizer steps. Soft-pruned filters are *not* masked here: they keep their
       gradients, momentum and weight decay like any other weight;
    3. the pruned channels' filter, bias and BN affine entries are set back to zero (one cached
       ``index_fill_`` per tensor), so the soft mask holds until a channel is restored.

    Without a pruner (before :meth:`supervise`) the wrapper behaves like its base class.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pruner = None

    @property
    def pruner(self):
        """The supervised pruner, or None."""
        return self._pruner

    def supervise(self, pruner):
        """Serve ``pruner`` from now on (None stops).

        Args:
            pruner: An object with ``record_gradients(scale)`` and ``reapply_masks()``, e.g. a
                :class:`~mmrecprune.methods.psap.StructuredPruner`.
        """
        self._pruner = pruner

    def gradient_scale(self):
        """Factor the recorded gradients carry (the AMP loss scale; 1 here)."""
        return 1.0

    def step(self, **kwargs):
        """Record gradient statistics, step the wrapped optimizer, re-zero pruned channels."""
        if self._pruner is not None:
            self._pruner.record_gradients(scale=self.gradient_scale())
        super().step(**kwargs)
        if self._pruner is not None:
            self._pruner.reapply_masks()

    def reset_state_slices(self, slices):
        """Zero the optimizer state (momentum, Adam moments) of some channels.

        Called when a pruning step prunes or restores channels, so a restored filter does not
        resume with momentum accumulated while it was pruned, and a newly pruned one starts its
        soft-pruned life without the momentum of its past.

        Args:
            slices (list[tuple[Parameter, int, Tensor]]): ``(param, dim, index)``, e.g. from
                :meth:`~mmrecprune.methods.psap.StructuredPruner.channel_param_slices`.
        """
        for param, dim, index in slices:
            state = self.optimizer.state.get(param)
            if not state:
                continue
            for value in state.values():
                if hasattr(value, 'shape') and value.shape == param.shape:
                    value.index_fill_(dim, index.to(value.device), 0)


@OPTIM_WRAPPERS.register_module()
class ProtectiveOptimWrapper(ProtectiveUpdateMixin, OptimWrapper):
    """:class:`~mmengine.optim.OptimWrapper` for soft structured pruning (PSAP and baselines).

    Takes the same arguments as ``OptimWrapper`` (``optimizer``, ``accumulative_counts``,
    ``clip_grad``). A ``StructuredPruningHook`` attaches its pruner with :meth:`supervise`; see
    :class:`ProtectiveUpdateMixin` for what happens around each step.

    Examples:
        >>> optim_wrapper = dict(
        >>>     type='mmrecprune.ProtectiveOptimWrapper',
        >>>     optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
    """


@OPTIM_WRAPPERS.register_module()
class AmpProtectiveOptimWrapper(ProtectiveUpdateMixin, AmpOptimWrapper):
    """:class:`~mmengine.optim.AmpOptimWrapper` for soft structured pruning.

    Takes the same arguments as ``AmpOptimWrapper``. The recorded activation gradients carry the
    loss scale; they are divided by the scaler's current scale, and a step the scaler skips
    (``inf`` / ``nan`` gradients) leaves the statistics unchanged.
    """

    def gradient_scale(self):
        return float(self.loss_scaler.get_scale())
