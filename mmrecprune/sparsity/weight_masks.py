"""Fixed unstructured masks held around optimizer steps: :class:`WeightMasks`, and the one
global optimizer step post-hook that applies them after steps of optimizers built later."""
import weakref

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from .mask_enforcement import apply_masks, check_masks, keep_bits, zero_pruned_bits_


class WeightMasks:
    """Fixed unstructured masks enforced around optimizer steps (how an unstructured cut holds).

    The parameters are kept by reference and the masks are cached on their devices once (as
    :func:`keep_bits`), so a step costs one bitwise AND (zeros, :func:`zero_pruned_bits_`) or
    ``masked_scatter_`` (fill values) per masked tensor: :meth:`zero_gradients` before the
    optimizer (momentum, Adam moments and gradient clipping ignore pruned entries) and
    :meth:`apply` after it. With a zero weight and a
    zero gradient SGD, Adam and AdamW leave a pruned entry at 0, but not a fill value: weight
    decay adds ``weight_decay * fill`` to its gradient (and momentum / Adam's normalisation carry
    it on), AdamW shrinks it by ``lr * weight_decay``, so :meth:`apply` right after each step is
    what makes a state_dict taken then (a checkpoint hook's) hold the fills exactly.

    The pruning optimizer wrapper calls both around each step; a model trained by a plain
    optimizer (a ticket backbone, see :func:`~mmrecprune.sparsity.freeze_masks`) has
    :meth:`apply` called by :meth:`apply_after_optimizer_steps`.

    Args:
        params (dict[str, nn.Parameter]): The masked parameters.
        masks (dict[str, BoolTensor]): One mask per parameter, same keys and shapes.
        fill_values (dict[str, Tensor], optional): For some masks, the value their pruned
            entries hold instead of 0 (broadcasting to the weight; ticket format v2). Held in
            the weight's dtype (a float64 fill is held as the float32 weight rounds it).
        functions (MaskFunctions, optional): Compiled kernels (:func:`mmrecprune.ops.
            mask_functions`) that zero all masked tensors in one call from the bool masks
            (the same bits); where they do not apply (CUDA, other dtypes) the bitwise AND runs.
    """

    def __init__(self, params, masks, fill_values=None, functions=None):
        check_masks(params, masks)
        self.params = dict(params)
        self.masks = dict(masks)
        self.functions = functions
        self.fills = {name: torch.as_tensor(fill).to(dtype=params[name].dtype)
                      for name, fill in (fill_values or {}).items()}
        self._param_ids = frozenset(id(p) for p in self.params.values())
        self._cache()

    def _layout(self):
        return tuple((p.device, p.dtype) for p in self.params.values())

    def _cache(self):
        """Cache the inverted masks and the fills on the parameters' devices, in their dtypes
        (again when the model moved: a ticket backbone is built on the CPU, then the runner
        moves it to the GPU)."""
        self._cached_layout = self._layout()
        self.masks = {name: mask.to(self.params[name].device)
                      for name, mask in self.masks.items()}
        self.fills = {name: fill.to(device=self.params[name].device,
                                    dtype=self.params[name].dtype)
                      for name, fill in self.fills.items()}
        zeroed = [name for name in self.masks if name not in self.fills]
        self._hot_params = [self.params[name] for name in zeroed]
        self._hot_masks = [self.masks[name] for name in zeroed]
        # fill values: the pruned entries' values, in mask order, for one masked_scatter_
        self._fill_params = [self.params[name] for name in self.fills]
        self._fill_pruned = [~self.masks[name] for name in self.fills]
        self._fill_values = [torch.broadcast_to(fill, self.params[name].shape)[~self.masks[name]]
                             for name, fill in self.fills.items()]
        self._grad_params = [self.params[name] for name in self.masks]
        self._bits = None
        if self.functions is None:  # the eager hot path's bits, ahead of the first step
            self._keep_bits()

    def _keep_bits(self):
        """The masks as :func:`keep_bits` in their parameters' dtypes, as two lists: of the
        zeroed weights and of all gradients (made on first use where the kernels zero: only a
        call they do not take needs them)."""
        if self._bits is None:
            bits = {name: keep_bits(mask, self.params[name].dtype)
                    for name, mask in self.masks.items()}
            self._bits = ([bits[name] for name in self.masks if name not in self.fills],
                          list(bits.values()))
        return self._bits

    @property
    def _hot_bits(self):
        return self._keep_bits()[0]

    @property
    def _grad_bits(self):
        return self._keep_bits()[1]

    def _compiled_zero(self, tensors, masks):
        """Zero with the kernels; False where there are none or they do not take these."""
        return self.functions is not None and bool(self.functions.zero_pruned(tensors, masks))

    def _follow_the_parameters(self):
        if self._layout() != self._cached_layout:
            self._cache()

    @torch.no_grad()
    def apply(self):
        """Set the pruned weights to 0 (or their fill value, exactly) in place."""
        self._follow_the_parameters()
        if not self._compiled_zero(self._hot_params, self._hot_masks):
            zero_pruned_bits_(self._hot_params, self._hot_bits)
        for param, pruned, values in zip(self._fill_params, self._fill_pruned,
                                         self._fill_values):
            param.masked_scatter_(pruned, values)

    def zero_gradients(self):
        """Zero the gradients of pruned entries (parameters without a gradient are skipped)."""
        self._follow_the_parameters()
        if self.functions is not None:
            grads = [(p.grad, mask) for p, mask in zip(self._grad_params, self.masks.values())
                     if p.grad is not None]
            if self._compiled_zero([g for g, _ in grads], [m for _, m in grads]):
                return
        with_grad = [(p.grad, bits if p.grad.element_size() == bits.element_size()
                      else keep_bits(bits != 0, p.grad.dtype))  # a grad of another size: rare
                     for p, bits in zip(self._grad_params, self._grad_bits)
                     if p.grad is not None]
        zero_pruned_bits_([g for g, _ in with_grad], [b for _, b in with_grad])

    def mask_optimizer_state(self, optimizer):
        """Zero every optimizer state tensor of a masked parameter's shape (momentum buffers,
        Adam moments) at the pruned entries, so entries pruned now restart from zero state."""
        for name, p in self.params.items():
            state = optimizer.state.get(p)
            if not state:
                continue
            buffers = {key: value for key, value in state.items()
                       if hasattr(value, 'shape') and value.shape == p.shape}
            apply_masks(buffers, dict.fromkeys(buffers, self.masks[name]))

    def gradient_hook(self, name):
        """A tensor hook for ``params[name]`` (``register_hook``) that zeroes the pruned entries
        of its gradient as backward produces it (before clipping or any optimizer sees it)."""
        index = list(self.masks).index(name)

        def hook(grad):
            bits = self._grad_bits[index]
            if bits.device != grad.device:  # the model moved since
                self._cache()
                bits = self._grad_bits[index]
            if bits.element_size() != grad.element_size():
                bits = keep_bits(bits != 0, grad.dtype)
            grad = grad.clone(memory_format=torch.preserve_format)
            zero_pruned_bits_([grad], [bits])
            return grad
        return hook

    def stepped_by(self, optimizer):
        """Whether ``optimizer`` updates any of the masked parameters."""
        return any(id(p) in self._param_ids
                   for group in optimizer.param_groups for p in group['params'])

    def apply_after_optimizer_steps(self):
        """From now on, :meth:`apply` right after every step of any optimizer that updates
        these parameters, including optimizers built later (a runner builds its optimizer after
        the model). Returns a handle; ``handle.remove()`` stops it.

        The trigger is PyTorch's global optimizer step post-hook, the one hook that runs after
        a step's update for an optimizer the model never sees: a per-optimizer
        ``register_step_post_hook`` needs the optimizer, which does not exist when a backbone
        is built, and parameter hooks (``register_hook``,
        ``register_post_accumulate_grad_hook``) run during backward, before the update. A forward
        pre-hook runs too late: a checkpoint hook saves between the step and the next forward.
        The hook holds these masks weakly: dropping the model frees it and ends the enforcing.
        """
        _register_step_post_hook()
        _AFTER_STEPS.add(self)
        return _AfterStepsHandle(self)


#: WeightMasks applied after every optimizer step that updates their parameters (held weakly).
_AFTER_STEPS = weakref.WeakSet()
_STEP_POST_HOOK = []


def _register_step_post_hook():
    """Register, once per process, the one global step post-hook serving :data:`_AFTER_STEPS`.
    One hook that is never removed: entries leave a WeakSet (safe while it is iterated), where
    removing torch's own hook entries from a weakref callback could happen while torch iterates
    them (a garbage collection inside another optimizer's step)."""
    if not _STEP_POST_HOOK:
        _STEP_POST_HOOK.append(
            register_optimizer_step_post_hook(_apply_after_step))


def _apply_after_step(optimizer, args, kwargs):
    for masks in list(_AFTER_STEPS):
        if masks.stepped_by(optimizer):
            masks.apply()


class _AfterStepsHandle:
    """What :meth:`WeightMasks.apply_after_optimizer_steps` returns: ``remove()`` stops it."""

    def __init__(self, masks):
        self._masks = weakref.ref(masks)

    def remove(self):
        masks = self._masks()
        if masks is not None:
            _AFTER_STEPS.discard(masks)
