"""Keep pruned weights at zero during downstream fine-tuning, with no optimizer wrapper."""

from .masks import apply_masks, check_masks


def freeze_masks(params, masks):
    """Zero the pruned weights and mask their gradients from now on.

    With a zero weight and a zero gradient, SGD (momentum, weight decay), Adam and AdamW all
    leave the weight at exactly zero, so a detector or segmenter config needs no special
    optimizer to keep an unstructured ticket's sparsity.

    A weight that does not require gradients (a frozen stage, e.g. mmdet's ``frozen_stages``)
    is zeroed but gets no hook: it never receives a gradient, so it stays as it is.

    Args:
        params (dict[str, nn.Parameter]): the masked weights.
        masks (dict[str, BoolTensor]): their masks (same keys and shapes).

    Returns:
        list: the hook handles (``handle.remove()`` lets the pruned weights train again).
    """
    check_masks(params, masks)
    apply_masks(params, masks)
    handles = []
    for name, param in params.items():
        if not param.requires_grad:
            continue
        keep = masks[name].to(param.device)
        handles.append(param.register_hook(lambda grad, keep=keep: grad * keep))
    return handles
