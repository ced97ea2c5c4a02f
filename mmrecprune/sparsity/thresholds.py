"""Magnitude thresholds for unstructured pruning: global and per layer.

Every function prunes a fraction ``ratio`` of the weights that *currently survive* (iterative
magnitude pruning: 20 % of the remaining weights per round gives sparsity ``1 - 0.8 ** k`` after
``k`` rounds). The number pruned is ``round(ratio * n_surviving)``, as in
``torch.nn.utils.prune``. The threshold is the exact ``k``-th smallest surviving magnitude,
selected in about one read of the weights (:class:`~.magnitude_selection.MagnitudeSelection`:
a strided sample brackets it, one pass writes the masks and collects the narrow band). Ties at
the threshold are broken deterministically by position (the order of ``params``, then
row-major order inside a weight: earlier entries are pruned first).

N:M masks (:func:`nm_magnitude_masks`) rank the same magnitudes inside groups of M
consecutive input channels (see :func:`~mmrecprune.sparsity.nm_layout.nm_groups`).

Plain PyTorch: no runner, no MMEngine.
"""
import math
from numbers import Real

import torch

from .magnitude_selection import MagnitudeSelection
from .masks import check_masks
from .nm_layout import nm_groups, nm_ungroup, parse_nm_pattern


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


def _num_to_prune(n_surviving, ratio):
    # Python's round() (half to even), the same rule as torch.nn.utils.prune.
    return int(round(ratio * n_surviving))


def _prune_smallest(layers, ratio):
    """New masks with ``round(ratio * n_surviving)`` more of the smallest magnitudes pruned."""
    return layers.prune_count(_num_to_prune(layers.n_surviving, ratio))


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
    layers = MagnitudeSelection(params, masks)
    k = _num_to_prune(layers.n_surviving, ratio)
    if k == 0:
        return 0.0
    return layers.kth_smallest_surviving(k)


def global_magnitude_masks(params, masks, ratio, functions=None):
    """Prune ``ratio`` of the surviving weights with the smallest magnitude, across all layers.

    Exactly ``round(ratio * n_surviving)`` weights are pruned; ties at the threshold are broken
    by position (see the module docstring). Already pruned weights stay pruned. ``params`` and
    ``masks`` are not modified; enforce the result with :func:`~.masks.apply_masks`.

    Args:
        params (dict[str, Tensor]): Weights by name (the magnitudes to rank).
        masks (dict[str, BoolTensor]): Current masks, same keys and shapes.
        ratio (float): Fraction of the surviving weights to prune, in ``[0, 1)``.
        functions (MaskFunctions, optional): Compiled kernels for the selection's pass
            (:func:`mmrecprune.ops.mask_functions`; the same masks); None: eager.

    Returns:
        dict[str, BoolTensor]: New masks, one new tensor per name, on each weight's device.
    """
    ratio = _check_inputs(params, masks, ratio)
    return _prune_smallest(MagnitudeSelection(params, masks, functions), ratio)


def layerwise_magnitude_masks(params, masks, ratios, functions=None):
    """Prune a fraction of each layer's surviving weights with the smallest magnitude.

    Args:
        params (dict[str, Tensor]): Weights by name.
        masks (dict[str, BoolTensor]): Current masks, same keys and shapes.
        ratios (float | dict[str, float]): One ratio for every layer, or ratios by name; layers
            missing from the dict are not pruned, names that are not in ``params`` are an
            error. Each ratio is in ``[0, 1)`` and applies to that layer's surviving weights.
        functions (MaskFunctions, optional): As for :func:`global_magnitude_masks`.

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
        layer = MagnitudeSelection({name: p}, {name: masks[name]}, functions)
        new_masks.update(_prune_smallest(layer, ratios[name]))
    return new_masks


@torch.no_grad()
def nm_protected(weight, keep, pattern):
    """The entries an N:M mask keeps whatever else is pruned: in every group of M (see
    :func:`~mmrecprune.sparsity.nm_layout.nm_groups`), the N largest surviving magnitudes (ties:
    the first in the group), and the whole dense tail of ``in % M`` channels that forms no
    group. Surviving = ``keep``. Returns a bool tensor of ``weight``'s shape."""
    n, m = parse_nm_pattern(pattern)
    mags = weight.detach().abs().to(torch.float64 if weight.dtype == torch.float64
                                    else torch.float32)
    groups, tail = nm_groups(mags.masked_fill(~keep, -1.0), m)
    top = torch.zeros_like(groups, dtype=torch.bool)
    if groups.numel():
        # a stable descending sort: among equal magnitudes the first in the group wins
        order = torch.sort(groups, dim=1, descending=True, stable=True).indices
        top.scatter_(1, order[:, :n], True)
    protected = nm_ungroup(top, torch.ones_like(tail, dtype=torch.bool), weight.shape)
    return protected & keep


def nm_magnitude_masks(params, masks, pattern, ratio=None, ranking='global'):
    """N:M keep-masks by magnitude: in every group of M consecutive input channels (at one
    output filter and kernel tap, the layout of
    :func:`~mmrecprune.sparsity.nm_layout.nm_groups`) at most N weights survive.

    The N largest surviving magnitudes of each group are protected; the other surviving
    entries of the groups are the candidates. With ``ratio=None`` every candidate is pruned
    (one-shot N:M: each group keeps its N largest). With a ``ratio``, ``round(ratio *
    n_surviving)`` candidates are pruned, smallest magnitude first, over all layers together
    (``ranking='global'``) or per layer (``'layerwise'``), at most all of them: iterative
    magnitude pruning under the N:M constraint, which reaches the pattern once the candidates
    run out (20 % per round reaches 2:4 in round 4: 20, 36, 48.8, then 50 %). The tail of
    ``in % M`` channels, which forms no group, is never pruned (it stays dense); a conv with
    fewer than M input channels per group is left dense entirely.

    Args:
        params (dict[str, Tensor]): Weights by name (the magnitudes to rank).
        masks (dict[str, BoolTensor]): Current masks, same keys and shapes; pruned entries
            stay pruned.
        pattern (str): ``'N:M'``, e.g. ``'2:4'``.
        ratio (float, optional): Fraction of the surviving weights to prune, in ``[0, 1)``;
            None: prune to the pattern.
        ranking (str): ``'global'`` or ``'layerwise'`` (used with a ``ratio``).

    Returns:
        dict[str, BoolTensor]: New masks, one new tensor per name.
    """
    parse_nm_pattern(pattern)
    if ranking not in ('global', 'layerwise'):
        raise ValueError(f"ranking must be 'global' or 'layerwise', got {ranking!r}")
    _check_inputs(params, masks, 0.0 if ratio is None else ratio)
    keeps = {name: masks[name].to(p.device) for name, p in params.items()}
    protected = {name: nm_protected(p, keeps[name], pattern) for name, p in params.items()}
    if ratio is None:
        return protected
    # the candidates keep their magnitude, everything protected ranks last (+inf)
    ranked = {name: p.detach().abs().float().masked_fill(protected[name], math.inf)
              if p.dtype != torch.float64 else
              p.detach().abs().masked_fill(protected[name], math.inf)
              for name, p in params.items()}
    groups = [list(params)] if ranking == 'global' else [[name] for name in params]
    new = {}
    for names in groups:
        layers = MagnitudeSelection({n: ranked[n] for n in names}, {n: keeps[n] for n in names})
        n_candidates = sum(int((keeps[n] & ~protected[n]).sum()) for n in names)
        k = min(_num_to_prune(layers.n_surviving, ratio), n_candidates)
        new.update(layers.prune_count(k))
    return new


#: The magnitude rankings by name (``ranking=`` of the unstructured pruners).
MAGNITUDE_RANKINGS = {'global': global_magnitude_masks, 'layerwise': layerwise_magnitude_masks}
