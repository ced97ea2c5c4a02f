"""Mean-value recovery: what pruned entries hold instead of zero (ticket format v2 ``fill``).

Pruning without fine-tuning removes each pruned entry's contribution; recovery puts back a mean
value, which a pruned backbone stores per layer, per filter or per entry. The paper does not say
which mean; these are the candidates the on-the-fly benchmark measures (README, recovery table):

* ``'zero'``: no recovery;
* ``'layer_mean'`` / ``'filter_mean'``: the signed mean of the pruned entries of the layer / of
  each output filter (one value each);
* ``'layer_abs_signed'`` / ``'filter_abs_signed'``: the mean magnitude of the pruned entries of
  the layer / filter, with each entry's own sign (a value per entry).
"""
import torch

from .masks import fill_pruned_

RECOVERY_MODES = ('zero', 'layer_mean', 'filter_mean', 'layer_abs_signed', 'filter_abs_signed')


def check_recovery(mode):
    if mode not in RECOVERY_MODES:
        raise ValueError(f'recovery must be one of {RECOVERY_MODES}, got {mode!r}')
    return mode


@torch.no_grad()
def recovery_fill(weight, mask, mode):
    """The fill value of ``weight``'s pruned entries (``~mask``) under ``mode``: a tensor that
    broadcasts to the weight (``[]`` per layer, ``[C_out, 1, ...]`` per filter, the weight's shape
    per entry), or None for ``'zero'``."""
    check_recovery(mode)
    if mode == 'zero':
        return None
    pruned = (~mask).to(weight.dtype)
    values = weight * pruned
    if mode.startswith('layer'):
        count = pruned.sum().clamp_min(1)
        mean = (values.abs() if mode.endswith('abs_signed') else values).sum() / count
    else:
        dims = tuple(range(1, weight.dim()))
        count = pruned.sum(dim=dims, keepdim=True).clamp_min(1)
        mean = (values.abs() if mode.endswith('abs_signed') else values).sum(dims, True) / count
    if mode.endswith('abs_signed'):
        # each entry's own sign (a zero entry stays zero), the mean magnitude
        return torch.sign(weight) * mean
    return mean


@torch.no_grad()
def apply_recovery(params, masks, mode):
    """Set every pruned entry to its :func:`recovery_fill` (0 for ``'zero'``) in place.

    Returns:
        dict[str, Tensor]: The fill values by name (empty for ``'zero'``), for the ticket.
    """
    fills = {}
    for name, param in params.items():
        fill = recovery_fill(param, masks[name], mode)
        fills[name] = torch.zeros((), dtype=param.dtype) if fill is None else fill
    fill_pruned_(params, masks, fills)
    return {} if mode == 'zero' else fills
