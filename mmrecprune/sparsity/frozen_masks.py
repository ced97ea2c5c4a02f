"""Keep pruned weights fixed during downstream fine-tuning, with no optimizer wrapper."""
from .masks import WeightMasks


def freeze_masks(params, masks, fill_values=None, owner=None):
    """Set the pruned weights to their fill value (0 unless given) and keep them there.

    The same :class:`~mmrecprune.sparsity.WeightMasks` the pruners enforce through the pruning
    optimizer wrapper, driven here by hooks, so a detector or segmenter config needs no special
    optimizer (mmdet / mmseg build a plain ``OptimWrapper``):

    * a gradient hook on each trainable masked weight zeroes the pruned entries of its gradient
      as backward produces it (momentum, Adam moments and gradient clipping ignore them);
    * right after every optimizer step that updates these weights (PyTorch's global step
      post-hook, see :meth:`WeightMasks.apply_after_optimizer_steps` for why that hook), the
      pruned entries are put back to exactly 0 or their fill value. With a zero gradient SGD,
      Adam and AdamW keep a zero at zero, but weight decay moves a non-zero fill value (by
      ``lr * weight_decay * fill`` and more through momentum, up to ``lr`` per step with Adam):
      putting it back only before the next forward left a checkpoint saved in between with the
      drifted values;
    * non-zero fills (ticket format v2, e.g. mean-value recovery): a forward pre-hook on
      ``owner`` also puts them back before each forward, for values changed outside an
      optimizer step (e.g. a checkpoint written before fills were enforced after each step).

    A weight that does not require gradients (a frozen stage, e.g. mmdet's ``frozen_stages``)
    is set but gets no gradient hook: it never receives a gradient, so it stays as it is.

    Args:
        params (dict[str, nn.Parameter]): the masked weights.
        masks (dict[str, BoolTensor]): their masks (same keys and shapes).
        fill_values (dict[str, Tensor], optional): for some masks, the values pruned entries
            hold (broadcasting to the weight; held in the weight's dtype).
        owner (nn.Module, optional): the module whose forward uses ``params``; needed for
            non-zero fill values.

    Returns:
        list: the hook handles (``handle.remove()`` on all of them lets the pruned weights
        train again).
    """
    fills = dict(fill_values or {})
    if fills and owner is None:
        raise ValueError('freeze_masks: non-zero fill values need the owner module, whose '
                         'forward pre-hook keeps them')
    enforced = WeightMasks(params, masks, fills)
    enforced.apply()
    # The hooks below hold `enforced` (the step post-hook holds it weakly), so it lives as long
    # as the weights or the owner do.
    handles = [param.register_hook(enforced.gradient_hook(name))
               for name, param in params.items() if param.requires_grad]
    handles.append(enforced.apply_after_optimizer_steps())
    if fills:
        handles.append(owner.register_forward_pre_hook(lambda module, args: enforced.apply()))
    return handles
