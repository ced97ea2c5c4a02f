"""Optimizer wrappers that keep pruned weights at exactly zero.

The masks themselves are decided elsewhere (a pruning hook calling the sparsity engine); these
wrappers only enforce them around every optimizer step, so any MMEngine training loop,
gradient accumulation and AMP included, keeps a fixed sparsity pattern.
"""
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mmrecprune.registry import OPTIM_WRAPPERS
from mmrecprune.sparsity.masks import apply_masks, check_masks, zero_pruned_


class MaskedUpdateMixin:
    """Masking logic shared by :class:`MaskedOptimWrapper` and :class:`AmpMaskedOptimWrapper`.

    Around every ``step()`` (which MMEngine calls from ``update_params`` once per accumulation
    window, or which a custom ``train_step`` may call itself):

    1. the gradients of pruned entries are set to zero, before gradient clipping and before the
       optimizer sees them, so momentum, Adam moments and the gradient norm ignore them;
    2. the wrapped optimizer steps;
    3. the masks are re-applied to the weights, which catches what the optimizer could still
       move (weight decay and momentum accumulated before the mask changed, AdamW's decoupled
       decay, ``eps`` terms), so pruned weights are exactly ``0`` after every step.

    Without masks (before :meth:`set_masks`) the wrapper behaves like its base class.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._masked_params = {}
        self._masks = {}
        self._hot_params = []
        self._hot_pruned = []

    @property
    def masks(self):
        """dict[str, BoolTensor]: The masks being enforced, by parameter name."""
        return dict(self._masks)

    def set_masks(self, params_by_name, masks):
        """Start enforcing ``masks`` on ``params_by_name``, replacing any previous masks.

        The parameters are kept by reference. The masks are applied right away to the weights
        and to every optimizer state tensor of the same shape (momentum buffers, Adam moments),
        so entries pruned by this call restart from zero state. Pass empty dicts to stop
        masking.

        Args:
            params_by_name (dict[str, nn.Parameter]): The masked parameters, e.g. from
                :func:`~mmrecprune.sparsity.prunable_parameters`.
            masks (dict[str, BoolTensor]): One mask per parameter, same keys and shapes.
        """
        check_masks(params_by_name, masks)
        self._masked_params = dict(params_by_name)
        self._masks = {name: mask.to(params_by_name[name].device)
                       for name, mask in masks.items()}
        # cached for the per-step hot path (zero_pruned_ takes inverted masks)
        self._hot_params = [params_by_name[name] for name in self._masks]
        self._hot_pruned = [~mask for mask in self._masks.values()]
        self.apply_masks()
        self._mask_optimizer_state()

    def apply_masks(self):
        """Zero the pruned weights in place (also done after every step)."""
        zero_pruned_(self._hot_params, self._hot_pruned)

    def reset_optimizer_state(self):
        """Drop all optimizer state (momentum, Adam moments, step counts) and the gradients.

        Needed after rewinding weights: state and gradients computed for the old weights do not
        belong to the rewound ones. Learning rates and parameter groups are kept.
        """
        self.optimizer.state.clear()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, **kwargs):
        """Mask the gradients, step the wrapped optimizer, then mask the weights."""
        self._mask_gradients()
        super().step(**kwargs)
        self.apply_masks()

    def _mask_gradients(self):
        with_grad = [(p.grad, pruned) for p, pruned in zip(self._hot_params, self._hot_pruned)
                     if p.grad is not None]
        zero_pruned_([g for g, _ in with_grad], [m for _, m in with_grad])

    def _mask_optimizer_state(self):
        for name, p in self._masked_params.items():
            state = self.optimizer.state.get(p)
            if not state:
                continue
            buffers = {key: value for key, value in state.items()
                       if hasattr(value, 'shape') and value.shape == p.shape}
            apply_masks(buffers, dict.fromkeys(buffers, self._masks[name]))


@OPTIM_WRAPPERS.register_module()
class MaskedOptimWrapper(MaskedUpdateMixin, OptimWrapper):
    """:class:`~mmengine.optim.OptimWrapper` that keeps pruned weights at exactly zero.

    Takes the same arguments as ``OptimWrapper`` (``optimizer``, ``accumulative_counts``,
    ``clip_grad``). Masks are given later with :meth:`set_masks`, usually by a pruning hook;
    see :class:`MaskedUpdateMixin` for what happens around each step.

    Examples:
        >>> optim_wrapper = dict(
        >>>     type='mmrecprune.MaskedOptimWrapper',
        >>>     optimizer=dict(type='SGD', lr=3e-4, momentum=0.9, weight_decay=1e-4),
        >>>     accumulative_counts=1)
    """


@OPTIM_WRAPPERS.register_module()
class AmpMaskedOptimWrapper(MaskedUpdateMixin, AmpOptimWrapper):
    """:class:`~mmengine.optim.AmpOptimWrapper` that keeps pruned weights at exactly zero.

    Takes the same arguments as ``AmpOptimWrapper`` (``loss_scale``, ``dtype``, plus those of
    ``OptimWrapper``). Gradients of pruned entries are zeroed while still scaled, which is
    exact; if the loss scaler skips a step because of ``inf`` / ``nan`` gradients, the weights
    are unchanged and stay masked.
    """
