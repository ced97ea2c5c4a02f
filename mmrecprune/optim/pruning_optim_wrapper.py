"""One optimizer wrapper for every pruner: it serves the attached pruner's protocol around each
optimizer step, so any MMEngine training loop (gradient accumulation, clipping, AMP) keeps the
pruner's masks and feeds its statistics.

The masks themselves are decided by a pruner (:mod:`mmrecprune.methods`) that a hook attaches;
``MaskedOptimWrapper`` and ``ProtectiveOptimWrapper`` (and their ``Amp`` twins), the names of
earlier releases, are registered names of the same two classes, so existing configs work as
they are.
"""
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mmrecprune.registry import OPTIM_WRAPPERS


class PruningUpdateMixin:
    """Serves an attached pruner (:class:`~mmrecprune.methods.BasePruner`):

    * ``update_params(loss)`` back-propagates ``pruner.regularize(loss)`` (a penalty, if any),
      added before the gradient-accumulation factor and the AMP loss scale apply to it
      (``backward(loss)`` called directly regularizes too);
    * around every ``step()`` (once per accumulation window):
      ``pruner.before_optimizer_step(scale)`` with the gradients ready (an unstructured pruner
      zeroes the pruned entries' gradients so momentum, Adam moments and clipping ignore them;
      a protective one records activation-gradient statistics, divided by the AMP loss
      ``scale``), the wrapped optimizer steps, then ``pruner.after_optimizer_step()`` puts
      pruned weights back to zero (what weight decay, momentum or ``eps`` terms moved).

    Without a pruner (before :meth:`attach`) the wrapper behaves like its base class.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pruner = None
        self._regularized = False  # scale_loss added the penalty; backward must not again

    @property
    def pruner(self):
        """The attached pruner, or None."""
        return self._pruner

    def attach(self, pruner):
        """Serve ``pruner`` from now on (None stops); it may adjust the optimizer state."""
        self._pruner = pruner
        if pruner is not None:
            pruner.attach_optimizer(self.optimizer)

    def gradient_scale(self):
        """Factor the gradients carry (the AMP loss scale; 1 here)."""
        return 1.0

    def scale_loss(self, loss):
        # the penalty joins the loss before the accumulation factor divides it, so with
        # `accumulative_counts=N` it weighs what it weighs without accumulation
        if self._pruner is not None:
            loss = self._pruner.regularize(loss)
            self._regularized = True
        return super().scale_loss(loss)

    def backward(self, loss, **kwargs):
        if self._pruner is not None and not self._regularized:
            loss = self._pruner.regularize(loss)  # called directly, not via update_params
        self._regularized = False
        super().backward(loss, **kwargs)

    def step(self, **kwargs):
        if self._pruner is not None:
            self._pruner.before_optimizer_step(scale=self.gradient_scale())
        super().step(**kwargs)
        if self._pruner is not None:
            self._pruner.after_optimizer_step()

    def reset_state(self, slices=None):
        """Clear optimizer state after a pruning step changed weights.

        Args:
            slices (list[tuple[Parameter, int, Tensor]] | None): ``(param, dim, index)`` entries
                whose state (momentum, Adam moments) is zeroed, e.g. channels a structured step
                pruned or restored; None clears all state and the gradients (after rewinding
                every weight). Learning rates and parameter groups are kept.
        """
        if slices is None:
            self.optimizer.state.clear()
            self.optimizer.zero_grad(set_to_none=True)
            return
        for param, dim, index in slices:
            state = self.optimizer.state.get(param)
            if not state:
                continue
            for value in state.values():
                if hasattr(value, 'shape') and value.shape == param.shape:
                    value.index_fill_(dim, index.to(value.device), 0)


@OPTIM_WRAPPERS.register_module(name=['PruningOptimWrapper', 'MaskedOptimWrapper',
                                      'ProtectiveOptimWrapper'])
class PruningOptimWrapper(PruningUpdateMixin, OptimWrapper):
    """:class:`~mmengine.optim.OptimWrapper` serving a pruner (see :class:`PruningUpdateMixin`).

    Takes the same arguments as ``OptimWrapper``; the pruning hook attaches its pruner.

    Examples:
        >>> optim_wrapper = dict(
        >>>     type='mmrecprune.PruningOptimWrapper',
        >>>     optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
    """


@OPTIM_WRAPPERS.register_module(name=['AmpPruningOptimWrapper', 'AmpMaskedOptimWrapper',
                                      'AmpProtectiveOptimWrapper'])
class AmpPruningOptimWrapper(PruningUpdateMixin, AmpOptimWrapper):
    """:class:`~mmengine.optim.AmpOptimWrapper` serving a pruner.

    Gradients reach the pruner still scaled: zeroing pruned entries is exact at any scale, and
    statistics are divided by the scaler's current scale; a step the scaler skips (``inf`` /
    ``nan`` gradients) leaves weights unchanged and still masked.
    """

    def gradient_scale(self):
        return float(self.loss_scaler.get_scale())


# the names of earlier releases, for code that imports them
MaskedOptimWrapper = ProtectiveOptimWrapper = PruningOptimWrapper
AmpMaskedOptimWrapper = AmpProtectiveOptimWrapper = AmpPruningOptimWrapper
