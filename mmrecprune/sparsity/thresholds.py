"""Magnitude thresholds for unstructured pruning: global and per layer.

Every function prunes a fraction ``ratio`` of the weights that *currently survive* (iterative
magnitude pruning: 20 % of the remaining weights per round gives sparsity ``1 - 0.8 ** k`` after
``k`` rounds). The number pruned is ``round(ratio * n_surviving)``, as in
``torch.nn.utils.prune``. Selection is vectorised: one concatenation of the magnitudes and one
``torch.kthvalue``; ties at the threshold are broken deterministically by position (the
parameter order of ``params``, then row-major order inside a weight: earlier entries are
pruned first).

Plain PyTorch: no runner, no MMEngine.
"""
from numbers import Real

import torch

from .masks import check_masks


def _check_ratio(ratio, what='ratio'):
    if isinstance(ratio, bool) or not isinstance(ratio, Real) or not 0 <= ratio < 1:
        raise ValueError(f'{what} must be a number in [0, 1) (the fraction of the surviving '
                         f'weights to prune), got {ratio!r}')
    return float(ratio)


def _check_inputs(params, masks, ratio):
    if not params:
        raise ValueError('params is empty: nothing to prune (check the include / exclude '
                         'patterns given to prunable_parameters)')
    check_masks(params, masks)
    return _check_ratio(ratio)


@torch.no_grad()
def _flat_magnitudes_and_keep(params, masks):
    """Concatenated ``|w|`` and keep-mask over all params, on the first param's device."""
    device = next(iter(params.values())).device
    mags = torch.cat([p.detach().reshape(-1).abs().to(device) for p in params.values()])
    keep = torch.cat([masks[name].reshape(-1).to(device) for name in params])
    return mags, keep


def _num_to_prune(n_surviving, ratio):
    # Python's round() (half to even), the same rule as torch.nn.utils.prune.
    return int(round(ratio * n_surviving))


def _surviving(mags, keep):
    return mags if bool(keep.all()) else mags[keep]


@torch.no_grad()
def _prune_smallest(mags, keep, ratio):
    """New flat keep-mask with the ``round(ratio * n)`` smallest surviving entries removed."""
    surviving = _surviving(mags, keep)
    k = _num_to_prune(surviving.numel(), ratio)
    if k == 0:
        return keep.clone()
    threshold = torch.kthvalue(surviving, k).values
    prune = keep & (mags < threshold)
    missing = k - int(prune.sum())
    if missing > 0:  # ties at the threshold: prune the first ``missing`` of them
        tied = (keep & (mags == threshold)).nonzero().squeeze(1)
        prune[tied[:missing]] = True
    return keep & ~prune


def _split_like(flat, params):
    out, start = {}, 0
    for name, p in params.items():
        n = p.numel()
        out[name] = flat[start:start + n].reshape(p.shape).to(p.device).clone()
        start += n
    return out


def global_magnitude_threshold(params, masks, ratio):
    """The magnitude below which ``ratio`` of the currently surviving weights fall.

    Precisely: the ``k``-th smallest ``|w|`` among the surviving weights of all ``params``
    together, ``k = round(ratio * n_surviving)``; ``0.0`` when ``k == 0``. Pruning every
    surviving weight with ``|w| <= threshold`` removes ``k`` weights when no other weight ties
    with the threshold (:func:`global_magnitude_masks` handles ties exactly).

    Args:
        params (dict[str, Tensor]): Weights by name.
        masks (dict[str, BoolTensor]): Current masks, same keys and shapes.
        ratio (float): Fraction of the surviving weights, in ``[0, 1)``.

    Returns:
        float: The threshold magnitude.
    """
    ratio = _check_inputs(params, masks, ratio)
    surviving = _surviving(*_flat_magnitudes_and_keep(params, masks))
    k = _num_to_prune(surviving.numel(), ratio)
    if k == 0:
        return 0.0
    return float(torch.kthvalue(surviving, k).values)


def global_magnitude_masks(params, masks, ratio):
    """Prune ``ratio`` of the surviving weights with the smallest magnitude, across all layers.

    Exactly ``round(ratio * n_surviving)`` weights are pruned; ties at the threshold are broken
    by position (see the module docstring). Already pruned weights stay pruned. ``params`` and
    ``masks`` are not modified; enforce the result with :func:`~.masks.apply_masks`.

    Args:
        params (dict[str, Tensor]): Weights by name (the magnitudes to rank).
        masks (dict[str, BoolTensor]): Current masks, same keys and shapes.
        ratio (float): Fraction of the surviving weights to prune, in ``[0, 1)``.

    Returns:
        dict[str, BoolTensor]: New masks, one new tensor per name, on each weight's device.
    """
    ratio = _check_inputs(params, masks, ratio)
    mags, keep = _flat_magnitudes_and_keep(params, masks)
    return _split_like(_prune_smallest(mags, keep, ratio), params)


def layerwise_magnitude_masks(params, masks, ratios):
    """Prune a fraction of each layer's surviving weights with the smallest magnitude.

    Args:
        params (dict[str, Tensor]): Weights by name.
        masks (dict[str, BoolTensor]): Current masks, same keys and shapes.
        ratios (float | dict[str, float]): One ratio for every layer, or ratios by name; layers
            missing from the dict are not pruned, names that are not in ``params`` are an
            error. Each ratio is in ``[0, 1)`` and applies to that layer's surviving weights.

    Returns:
        dict[str, BoolTensor]: New masks, one new tensor per name.
    """
    if isinstance(ratios, dict):
        unknown = sorted(set(ratios) - set(params))
        if unknown:
            raise ValueError(f'ratios name layers that are not in params: {unknown[:5]}')
        _check_inputs(params, masks, 0.0)
        ratios = {name: _check_ratio(ratios.get(name, 0.0), f'ratio of {name!r}')
                  for name in params}
    else:
        ratio = _check_inputs(params, masks, ratios)
        ratios = dict.fromkeys(params, ratio)
    new_masks = {}
    with torch.no_grad():
        for name, p in params.items():
            mask = masks[name].to(p.device)
            keep = _prune_smallest(p.detach().reshape(-1).abs(), mask.reshape(-1), ratios[name])
            new_masks[name] = keep.reshape(p.shape)
    return new_masks
