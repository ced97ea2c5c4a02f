"""Keep pruned weights fixed during downstream fine-tuning, with no optimizer wrapper."""
import torch

from .masks import apply_masks, check_masks, fill_pruned_


def freeze_masks(params, masks, fill_values=None, owner=None):
    """Set the pruned weights to their fill value (0 unless given) and keep them there.

    Zero fills (every version-1 ticket): the pruned entries' gradients are masked. With a zero
    weight and a zero gradient, SGD (momentum, weight decay), Adam and AdamW all leave the
    weight at exactly zero, so a detector or segmenter config needs no special optimizer.

    Non-zero fills (ticket format v2, e.g. mean-value recovery): weight decay would still move
    them, so besides the masked gradient a forward pre-hook on ``owner`` puts every pruned entry
    back to its fill value before each forward pass (one ``torch.where`` per such tensor).

    A weight that does not require gradients (a frozen stage, e.g. mmdet's ``frozen_stages``)
    is set but gets no gradient hook: it never receives a gradient, so it stays as it is.

    Args:
        params (dict[str, nn.Parameter]): the masked weights.
        masks (dict[str, BoolTensor]): their masks (same keys and shapes).
        fill_values (dict[str, Tensor], optional): for some masks, the values pruned entries
            hold (broadcasting to the weight).
        owner (nn.Module, optional): the module whose forward uses ``params``; needed for
            non-zero fill values.

    Returns:
        list: the hook handles (``handle.remove()`` lets the pruned weights train again).
    """
    check_masks(params, masks)
    fills = {n: torch.broadcast_to(torch.as_tensor(f, dtype=params[n].dtype),
                                   params[n].shape).to(params[n].device)
             for n, f in (fill_values or {}).items()}
    if fills and owner is None:
        raise ValueError('freeze_masks: non-zero fill values need the owner module, whose '
                         'forward pre-hook keeps them')
    keep = {n: m.to(params[n].device) for n, m in masks.items()}
    apply_masks({n: p for n, p in params.items() if n not in fills},
                {n: m for n, m in keep.items() if n not in fills})
    fill_pruned_(params, keep, fills)
    handles = []
    for name, param in params.items():
        if not param.requires_grad:
            continue
        handles.append(param.register_hook(lambda grad, keep=keep[name]: grad * keep))
    if fills:
        handles.append(owner.register_forward_pre_hook(
            lambda module, args: fill_pruned_(params, keep, fills)))
    return handles
