"""Magnitude thresholds for unstructured pruning: global and per layer.

Every function prunes a fraction ``ratio`` of the weights that *currently survive* (iterative
magnitude pruning: 20 % of the remaining weights per round gives sparsity ``1 - 0.8 ** k`` after
``k`` rounds). The number pruned is ``round(ratio * n_surviving)``, as in
``torch.nn.utils.prune``. Selection is vectorised, a few tensor operations per layer and no
per-weight loops: the threshold is the exact ``k``-th smallest surviving magnitude, found with
``torch.kthvalue`` on the narrow value band that a strided sample brackets (on all magnitudes
concatenated if the band misses). Ties at the threshold are broken deterministically by
position (the order of ``params``, then row-major order inside a weight: earlier entries are
pruned first).

N:M masks (:func:`nm_magnitude_masks`) rank the same magnitudes inside groups of M
consecutive input channels (see :func:`~mmrecprune.sparsity.nm_layout.nm_groups`).

Plain PyTorch: no runner, no MMEngine.
"""
import math
from numbers import Real

import torch

from .masks import check_masks
from .nm_layout import nm_groups, nm_ungroup, parse_nm_pattern

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


def _num_to_prune(n_surviving, ratio):
    # Python's round() (half to even), the same rule as torch.nn.utils.prune.
    return int(round(ratio * n_surviving))


def _magnitudes(weight, keep, dtype, out=None):
    """``|weight|`` (flat) in ``dtype``, entries not kept set to ``-1`` (into ``out``, a buffer
    of at least ``weight.numel()`` entries, if given: fresh pages for every layer cost more
    than the pass itself)."""
    if out is not None and weight.dtype == dtype:
        mags = torch.abs(weight, out=out[:weight.numel()])
    else:
        mags = weight.abs() if weight.dtype == dtype else weight.to(dtype).abs_()
    if keep is not None:
        mags.masked_fill_(~keep, -1.0)
    return mags


class _Layers:
    """Flat views of the weights and masks of one selection, and their counts.

    Magnitudes are computed layer by layer when needed instead of being concatenated: big
    temporary buffers cost more (fresh pages) than the second read of the weights. Pruned entries
    count as magnitude ``-1``, so the ``k``-th smallest surviving magnitude is the
    ``(n_pruned + k)``-th smallest entry overall.
    """

    def __init__(self, params, masks):
        self.dtype = torch.float64 if any(p.dtype == torch.float64 for p in params.values()) \
            else torch.float32
        self.device = next(iter(params.values())).device
        self.items, self.shapes = [], {}
        self.numel = self.n_pruned = 0
        for name, p in params.items():
            weight = p.detach().reshape(-1)
            keep = masks[name].reshape(-1).to(weight.device)
            n_kept = int(torch.count_nonzero(keep))
            self.items.append((name, weight, keep if n_kept < keep.numel() else None))
            self.shapes[name] = p.shape
            self.numel += weight.numel()
            self.n_pruned += weight.numel() - n_kept

    def magnitudes(self, weight, keep):
        return _magnitudes(weight, keep, self.dtype).to(self.device)

    def all_magnitudes(self):
        return torch.cat([self.magnitudes(w, keep) for _, w, keep in self.items])

    @torch.no_grad()
    def kth_smallest(self, k):
        """The ``k``-th smallest magnitude (1-based, over all entries) and how many are ``<=``.

        Equals ``torch.kthvalue`` over the concatenated magnitudes, but for large selections a
        sorted strided sample first brackets the answer in a narrow value band, and only the
        band goes to ``torch.kthvalue``. Deterministic (no random sampling) and exact: if the
        band misses the ``k``-th value (an unrepresentative sample), it falls back to a full
        ``kthvalue``.
        """
        return self._select(k)[:2]

    def _band(self, k):
        """``(lo, hi)`` bracketing the ``k``-th smallest entry by a strided sample (either may
        be None: unbounded), or None when the selection is small or the band would be all."""
        n = self.numel
        if n < _SAMPLED_SELECTION_MIN_NUMEL:
            return None
        stride = max(1, n // _SELECTION_SAMPLE_SIZE)
        sample = torch.cat([
            self.magnitudes(w[::stride], None if keep is None else keep[::stride])
            for _, w, keep in self.items]).sort().values
        m = sample.numel()
        q = k / n
        margin = 6.0 * math.sqrt(m * q * (1.0 - q)) + 8.0
        i_lo, i_hi = int(q * m - margin), int(math.ceil(q * m + margin))
        if i_lo < 0 and i_hi >= m:
            return None
        return (float(sample[i_lo]) if i_lo >= 0 else None,
                float(sample[i_hi]) if i_hi < m else None)

    def _select(self, k, masks=False):
        """``(value, n_at_most, parts)``: the ``k``-th smallest entry, how many are ``<=`` it,
        and with ``masks``, per item ``(at_least_lo, band_index, band_values)`` from the one
        pass over the magnitudes that found the band (None after the fallback), from which
        :meth:`prune_count` builds the masks without a second pass."""
        band_limits = self._band(k)
        if band_limits is not None:
            lo, hi = band_limits
            below, bands, parts = 0, [], []
            largest = max(w.numel() for _, w, _ in self.items)
            buffer = torch.empty(largest, dtype=self.dtype, device=self.items[0][1].device)
            for _, w, keep in self.items:
                mags = _magnitudes(w, keep, self.dtype, buffer)
                if lo is None:
                    at_least_lo = None
                    in_band = mags <= hi
                else:
                    at_least_lo = mags >= lo
                    below += mags.numel() - int(torch.count_nonzero(at_least_lo))
                    in_band = at_least_lo if hi is None else at_least_lo & (mags <= hi)
                if masks:
                    index = in_band.nonzero().squeeze(1)
                    values = mags[index]
                    parts.append((at_least_lo, index, values))
                else:
                    values = mags[in_band]
                bands.append(values.to(self.device))
            band = torch.cat(bands)
            if below < k <= below + band.numel():
                value = torch.kthvalue(band, k - below).values
                return (float(value), below + int(torch.count_nonzero(band <= value)),
                        parts if masks else None)
        mags = self.all_magnitudes()
        value = torch.kthvalue(mags, k).values
        return float(value), int(torch.count_nonzero(mags <= value)), None

    @torch.no_grad()
    def prune_smallest(self, ratio):
        """New masks with ``round(ratio * n_surviving)`` more of the smallest entries pruned."""
        return self.prune_count(_num_to_prune(self.numel - self.n_pruned, ratio))

    @torch.no_grad()
    def prune_count(self, k):
        """New masks with the ``k`` smallest surviving entries pruned (ties by position)."""
        new = {}
        if k == 0:
            for name, w, keep in self.items:
                new[name] = torch.ones_like(w, dtype=torch.bool) if keep is None else keep.clone()
            return {name: mask.reshape(self.shapes[name]) for name, mask in new.items()}
        threshold, n_at_most, parts = self._select(self.n_pruned + k, masks=True)
        if parts is None:
            tied_at = {}
            for name, w, keep in self.items:
                new[name] = _magnitudes(w, keep, self.dtype) > threshold
        else:
            # every entry below the band is pruned, every entry above it kept: start from
            # ">= lo" and prune the band's entries at or below the threshold
            tied_at = {}
            for (name, w, _), (at_least_lo, index, values) in zip(self.items, parts):
                mask = (torch.ones(w.numel(), dtype=torch.bool, device=w.device)
                        if at_least_lo is None else at_least_lo)
                mask[index[values <= threshold]] = False
                new[name] = mask
                tied_at[name] = index[values == threshold]
        # Ties at the threshold: the first ones (in order) are pruned, the last ``excess``
        # ones kept.
        excess = n_at_most - (self.n_pruned + k)
        for name, w, keep in reversed(self.items):
            if excess <= 0:
                break
            tied = tied_at.get(name)
            if tied is None:
                tied = (_magnitudes(w, keep, self.dtype) == threshold).nonzero().squeeze(1)
            tied = tied[max(0, tied.numel() - excess):]
            new[name][tied] = True
            excess -= tied.numel()
        return {name: mask.reshape(self.shapes[name]) for name, mask in new.items()}


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
    layers = _Layers(params, masks)
    k = _num_to_prune(layers.numel - layers.n_pruned, ratio)
    if k == 0:
        return 0.0
    return layers.kth_smallest(layers.n_pruned + k)[0]


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
    return _Layers(params, masks).prune_smallest(ratio)


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
        new_masks.update(_Layers({name: p}, {name: masks[name]}).prune_smallest(ratios[name]))
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
        layers = _Layers({n: ranked[n] for n in names}, {n: keeps[n] for n in names})
        n_candidates = sum(int((keeps[n] & ~protected[n]).sum()) for n in names)
        k = min(_num_to_prune(layers.numel - layers.n_pruned, ratio), n_candidates)
        new.update(layers.prune_count(k))
    return new


#: The magnitude rankings by name (``ranking=`` of the unstructured pruners).
MAGNITUDE_RANKINGS = {'global': global_magnitude_masks, 'layerwise': layerwise_magnitude_masks}
