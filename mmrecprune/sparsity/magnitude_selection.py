"""Exact selection of the ``k`` smallest surviving magnitudes over many weights, in about one
read of the weights.

A strided sample of the surviving magnitudes brackets the ``k``-th smallest in a narrow value
band ``[lo, hi]``. One pass over each weight then writes its new mask as ``keep & (|w| >= lo)``
(every entry below the band is pruned, every entry above it kept), counts what it kept and
collects the band's entries (positions and magnitudes, about 1 % of them). The threshold is
the exact ``k``-th smallest once the entries below the band are counted, and the band's entries
at or below it are then pruned through their positions: no second pass. If the band misses
the ``k``-th value (an unrepresentative sample), the pass is run again on the side it lies
(``(-inf, lo]`` or ``[hi, inf)``), so the result is exact whatever the sample.

On the CPU the pass runs on NumPy views of the tensors (no copy) in chunks that stay in the
L2 cache: NumPy's comparisons into a bool array are vectorised, PyTorch's CPU comparison
kernels write bools several times slower than one read of the weights. Other devices and
dtypes without a NumPy equivalent (``bfloat16``) take the same steps with whole-tensor
PyTorch operations. Ties at the threshold are broken by position (the order of the weights,
then row-major order inside a weight: earlier entries are pruned first).

Given ``functions`` (:func:`mmrecprune.ops.mask_functions`, opt-in), the pass over a float32
weight runs as one compiled read instead (the same mask, count and band).
"""
import math

import numpy as np
import torch

# Below this many surviving entries the band is all of them (no sample): as fast, and simpler.
_SAMPLED_SELECTION_MIN_NUMEL = 1 << 20
_SELECTION_SAMPLE_SIZE = 1 << 18
# Entries per chunk of the CPU pass: the chunk, its magnitudes and two bool arrays stay in L2.
_CHUNK = 1 << 17
# The sample's bracket is this many standard deviations of a sampled quantile wide, each side.
_BRACKET_SIGMAS = 6.0
_NUMPY_DTYPES = (torch.bool, torch.float16, torch.float32, torch.float64)


def _numpy_view(tensor):
    """A NumPy view of a CPU tensor of a dtype NumPy has, else None."""
    if tensor.device.type == 'cpu' and tensor.dtype in _NUMPY_DTYPES:
        return tensor.numpy()
    return None


def _set_at(out, index, value):
    """``out[index] = value`` for a flat bool tensor and NumPy positions."""
    view = _numpy_view(out)
    if view is not None:
        view[index] = value
    elif index.size:
        out[torch.from_numpy(index).to(out.device)] = value


class MagnitudeSelection:
    """The surviving magnitudes of a set of weights, ranked together.

    Args:
        params (dict[str, Tensor]): Weights by name.
        masks (dict[str, BoolTensor]): Current masks (``True``: surviving), same keys and
            shapes; pruned entries take no part in the ranking and stay pruned.
        functions (MaskFunctions, optional): Compiled kernels for the pass
            (:func:`mmrecprune.ops.mask_functions`); None: NumPy / PyTorch.

    Magnitudes are compared in float64 if any weight is float64, else in float32 (float16 and
    bfloat16 convert to it exactly).
    """

    def __init__(self, params, masks, functions=None):
        wide = any(p.dtype == torch.float64 for p in params.values())
        # (the kernels compare in float32: not where any weight ranks in float64)
        self.functions = None if wide else functions
        self.dtype = torch.float64 if wide else torch.float32
        self.np_dtype = np.float64 if wide else np.float32
        self.items, self.shapes = [], {}
        self.numel = self.n_pruned = 0
        for name, p in params.items():
            weight = p.detach().reshape(-1)
            keep = masks[name].reshape(-1).to(weight.device)
            keep_view = _numpy_view(keep)
            n_kept = int(np.count_nonzero(keep_view) if keep_view is not None
                         else torch.count_nonzero(keep))
            self.items.append((name, weight, keep if n_kept < keep.numel() else None))
            self.shapes[name] = p.shape
            self.numel += weight.numel()
            self.n_pruned += weight.numel() - n_kept
        self.n_surviving = self.numel - self.n_pruned

    def _bracket(self, k):
        """``(lo, hi)`` around the ``k``-th smallest surviving magnitude from a strided sample
        (None: unbounded on that side)."""
        if self.n_surviving < _SAMPLED_SELECTION_MIN_NUMEL:
            return None, None
        stride = max(1, self.numel // _SELECTION_SAMPLE_SIZE)
        parts = []
        for _, weight, keep in self.items:
            part = weight[::stride]
            if keep is not None:
                part = part[keep[::stride]]
            view = _numpy_view(part)
            parts.append(view if view is not None else part.to(self.dtype).cpu().numpy())
        sample = np.abs(np.concatenate(parts).astype(self.np_dtype, copy=False))
        m = sample.size
        q = k / self.n_surviving
        margin = _BRACKET_SIGMAS * math.sqrt(m * q * (1.0 - q)) + 8.0
        i_lo, i_hi = int(q * m - margin), int(math.ceil(q * m + margin))
        inside = [i for i in (i_lo, i_hi) if 0 <= i < m]
        if not inside:
            return None, None
        sample = np.partition(sample, inside)
        return (sample[i_lo] if i_lo >= 0 else None), (sample[i_hi] if i_hi < m else None)

    def _scan_numpy(self, weight, keep, out, lo, hi):
        """:meth:`_scan` on NumPy views, chunk by chunk."""
        lo = None if lo is None else self.np_dtype(lo)
        hi = None if hi is None else self.np_dtype(hi)
        magnitudes = np.empty(min(_CHUNK, weight.size), weight.dtype)
        below_hi = np.empty(magnitudes.size, bool)
        n_kept, index, values = 0, [np.empty(0, np.int64)], [magnitudes[:0]]
        for start in range(0, weight.size, _CHUNK):
            chunk = weight[start:start + _CHUNK]
            n = chunk.size
            mags = np.abs(chunk, out=magnitudes[:n])
            mask = out[start:start + n]
            if lo is None:
                mask.fill(True)
            else:
                np.greater_equal(mags, lo, out=mask)
            if keep is not None:
                np.logical_and(mask, keep[start:start + n], out=mask)
            n_kept += np.count_nonzero(mask)
            band = mask
            if hi is not None:
                band = np.less_equal(mags, hi, out=below_hi[:n])
                np.logical_and(band, mask, out=band)
            at = np.flatnonzero(band)
            index.append(at + start)
            values.append(mags[at])
        return n_kept, np.concatenate(index), np.concatenate(values)

    @torch.no_grad()
    def _scan_torch(self, weight, keep, out, lo, hi):
        """:meth:`_scan` with whole-tensor PyTorch operations (other devices, bfloat16)."""
        mags = weight.abs().to(self.dtype)
        mask = torch.ones_like(out) if lo is None else mags >= float(lo)
        if keep is not None:
            mask &= keep
        out.copy_(mask)
        band = mask if hi is None else mask & (mags <= float(hi))
        at = band.nonzero().squeeze(1)
        return (int(torch.count_nonzero(mask)), at.cpu().numpy(),
                mags[at].cpu().numpy())

    def _scan(self, weight, keep, out, lo, hi):
        """Write ``keep & (|weight| >= lo)`` into ``out``; return how many entries it keeps,
        and the positions and magnitudes of those also ``<= hi`` (the band)."""
        if self.functions is not None:
            scanned = self.functions.magnitude_scan(weight, keep, out, lo, hi)
            if scanned is not None:
                return scanned
        views = [_numpy_view(t) for t in (weight, out)]
        if keep is not None:
            views.append(_numpy_view(keep))
        if any(v is None for v in views):
            return self._scan_torch(weight, keep, out, lo, hi)
        return self._scan_numpy(views[0], None if keep is None else views[2], views[1], lo, hi)

    def _select(self, k, outs):
        """The ``k``-th smallest surviving magnitude (1-based), how many surviving ones are
        ``<=`` it, and the band of each weight ``(positions, magnitudes)``; ``outs`` (one flat
        bool tensor per weight) hold ``keep & (|w| >= lo)``."""
        lo, hi = self._bracket(k)
        for attempt in range(3):
            scans = [self._scan(weight, keep, out, lo, hi)
                     for (_, weight, keep), out in zip(self.items, outs)]
            below = self.n_surviving - sum(scan[0] for scan in scans)
            band = np.concatenate([scan[2] for scan in scans]).astype(self.np_dtype, copy=False)
            if below < k <= below + band.size:
                break
            # the band missed: rerun on the side where the k-th value lies (a nan in the
            # sample can make both sides miss: then the band is every surviving entry)
            lo, hi = (None, None) if attempt else (None, lo) if k <= below else (hi, None)
        threshold = np.partition(band, k - below - 1)[k - below - 1]
        n_at_most = below + int(np.count_nonzero(band <= threshold))
        return threshold, n_at_most, [(scan[1], scan[2]) for scan in scans]

    def _new_outs(self):
        return [torch.empty(weight.numel(), dtype=torch.bool, device=weight.device)
                for _, weight, _ in self.items]

    def kth_smallest_surviving(self, k):
        """The ``k``-th smallest surviving magnitude (1-based, ``1 <= k <= n_surviving``)."""
        return float(self._select(k, self._new_outs())[0])

    def prune_count(self, k):
        """New masks (by name, in the weights' shapes) with the ``k`` smallest surviving
        entries pruned; ties at the threshold by position (earlier entries pruned first)."""
        outs = self._new_outs()
        if k == 0:
            for (_, _, keep), out in zip(self.items, outs):
                if keep is None:
                    out.fill_(True)
                else:
                    out.copy_(keep)
        else:
            threshold, n_at_most, bands = self._select(k, outs)
            for out, (index, values) in zip(outs, bands):
                _set_at(out, index[values <= threshold], False)
            # too many at or below the threshold: the last ``excess`` tied entries stay
            excess = n_at_most - k
            for out, (index, values) in zip(reversed(outs), reversed(bands)):
                if excess <= 0:
                    break
                tied = index[values == threshold]
                tied = tied[max(0, tied.size - excess):]
                _set_at(out, tied, True)
                excess -= tied.size
        return {name: out.view(self.shapes[name]) for (name, _, _), out in zip(self.items, outs)}
