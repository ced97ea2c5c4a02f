"""Magnitude thresholds for unstructured pruning: global and per layer.

Every function prunes a fraction ``ratio`` of the weights that *currently survive* (iterative
magnitude pruning: 20 % of the remaining weights per round gives sparsity ``1 - 0.8 ** k`` after
``k`` rounds). The number pruned is ``round(ratio * n_surviving)``, as in
``torch.nn.utils.prune``. Selection is vectorised: the magnitudes are written once into one
flat vector, and the threshold is an exact ``k``-th smallest value found with
``torch.kthvalue`` on a narrow value band that a strided sample brackets (a full ``kthvalue``
if the band misses). Ties at the threshold are broken deterministically by position (the order
of ``params``, then row-major order inside a weight: earlier entries are pruned first).

Plain PyTorch: no runner, no MMEngine.
"""
import math
from numbers import Real

import torch

from .masks import check_masks

# Below this many entries a plain ``torch.kthvalue`` is as fast as the sampled selection.
_SAMPLED_SELECTION_MIN_NUMEL = 1 << 20
_SELECTION_SAMPLE_SIZE = 1 << 16


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
def _flat_magnitudes(params, masks):
    """``|w|`` of all ``params`` in one new vector, pruned entries set to ``-1``.

    Returns the vector (float32, or float64 if a weight is float64; on the first weight's
    device) and the number of pruned entries. Marking pruned entries with ``-1`` instead of
    compacting the survivors keeps positions, so the ``k``-th smallest surviving magnitude is
    the ``(k + n_pruned)``-th smallest entry and the new keep-mask is ``mags > threshold``.
    """
    first = next(iter(params.values()))
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params.values()) \
        else torch.float32
    mags = torch.empty(sum(p.numel() for p in params.values()), dtype=dtype,
                       device=first.device)
    n_pruned, start = 0, 0
    for name, p in params.items():
        segment = mags[start:start + p.numel()]
        start += p.numel()
        weight = p.detach().reshape(-1)
        if weight.dtype == dtype and weight.device == segment.device:
            torch.abs(weight, out=segment)
        else:
            segment.copy_(weight).abs_()
        keep = masks[name].reshape(-1).to(segment.device)
        n_layer_pruned = keep.numel() - int(torch.count_nonzero(keep))
        if n_layer_pruned:
            segment.masked_fill_(~keep, -1.0)
            n_pruned += n_layer_pruned
    return mags, n_pruned


def _num_to_prune(n_surviving, ratio):
    # Python's round() (half to even), the same rule as torch.nn.utils.prune.
    return int(round(ratio * n_surviving))


@torch.no_grad()
def _kth_smallest(values, k):
    """The ``k``-th smallest entry (1-based) of a flat tensor, and how many entries are ``<=`` it.

    Equals ``torch.kthvalue(values, k).values``, faster for large tensors: a sorted strided
    sample brackets the answer in a narrow value band, and only the band goes to
    ``torch.kthvalue``. Deterministic (no random sampling) and exact: if the band misses the
    ``k``-th value (an unrepresentative sample), it falls back to a full ``kthvalue``.
    """
    n = values.numel()
    if n >= _SAMPLED_SELECTION_MIN_NUMEL:
        sample = values[::max(1, n // _SELECTION_SAMPLE_SIZE)].sort().values
        m = sample.numel()
        q = k / n
        margin = 6.0 * math.sqrt(m * q * (1.0 - q)) + 8.0
        i_lo, i_hi = int(q * m - margin), int(math.ceil(q * m + margin))
        if i_lo >= 0 or i_hi < m:
            if i_lo >= 0:
                in_band = values >= sample[i_lo]
                below = n - int(torch.count_nonzero(in_band))
                if i_hi < m:
                    in_band &= values <= sample[i_hi]
            else:
                in_band, below = values <= sample[i_hi], 0
            band = values[in_band]
            if below < k <= below + band.numel():
                value = torch.kthvalue(band, k - below).values
                return value, below + int(torch.count_nonzero(band <= value))
    value = torch.kthvalue(values, k).values
    return value, int(torch.count_nonzero(values <= value))


@torch.no_grad()
def _prune_smallest(mags, n_pruned, ratio):
    """New flat keep-mask: ``round(ratio * n_surviving)`` more entries of ``mags`` pruned.

    ``mags`` comes from :func:`_flat_magnitudes` (pruned entries are ``-1``).
    """
    k = _num_to_prune(mags.numel() - n_pruned, ratio)
    if k == 0:
        return mags >= 0
    threshold, n_at_most = _kth_smallest(mags, n_pruned + k)
    keep = mags > threshold
    excess = n_at_most - (n_pruned + k)
    if excess > 0:  # ties at the threshold: prune the first ones, keep the last ``excess``
        tied = (mags == threshold).nonzero().squeeze(1)
        keep[tied[-excess:]] = True
    return keep


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
    mags, n_pruned = _flat_magnitudes(params, masks)
    k = _num_to_prune(mags.numel() - n_pruned, ratio)
    if k == 0:
        return 0.0
    return float(_kth_smallest(mags, n_pruned + k)[0])


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
    keep = _prune_smallest(*_flat_magnitudes(params, masks), ratio)
    return _split_like(keep, params)


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
    for name, p in params.items():
        keep = _prune_smallest(*_flat_magnitudes({name: p}, {name: masks[name]}),
                               ratios[name])
        new_masks[name] = keep.reshape(p.shape)
    return new_masks
