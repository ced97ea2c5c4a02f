"""The gap penalty of on-the-fly pruning: open a gap between the weights that will be pruned
and those that will be kept, so that pruning them later changes little.

Our reading of "pushes a fraction p of each layer's normalised weights towards zero and the rest
away from zero" (only the paper's abstract is public). For a layer with fan-in ``n`` and unit-norm
filters ``w``, magnitudes are measured on the scale-free ``u = |w| * sqrt(n)`` (root mean square 1
in every layer, whatever its fan-in), and the layer's target set ``S`` is its ``p`` fraction of
smallest ``u`` (re-selected every few steps, not differentiated). The layer's term is

    mean_{i in S} u_i  +  mean_{i not in S} relu(margin - u_i)

an L1 pull of the target set to zero and a hinge that keeps the other weights at least ``margin``
from zero. The penalty is the mean of the layer terms, so its size does not grow with depth.
With unit-norm filters the first term alone would already push the norm onto the kept weights;
the hinge stops kept weights near the border from following the target set down.

How it is computed: every training step, all layers together. The layers whose filters have
the same fan-in ``K`` are stacked into one ``(filters, K)`` matrix (:class:`FanInLayout`; a
ResNet-18 has 7 distinct fan-ins for 19 layers, a deeper ResNet of the same widths no more), so
the per-filter norms and sums are row operations on a few matrices and the per-layer means are
segment sums over the filters; the gradient is written out (:class:`_GapPenalty`). A flat
vector of all weights with gathers and segment sums over entries was slower on a CPU
(``index_select`` / ``segment_reduce`` cost ten plain passes each, and every step allocated
several vectors of the model's size). The per-layer autograd loop it replaces cost about 20 %
of a ResNet-18-w16 training step on 2 CPU cores (issue 22).
"""
import math

import torch

from .hyperspherical import NORM_EPS, unit_filters


def scaled_magnitudes(weight):
    """``|unit_filters(weight)| * sqrt(fan_in)`` (root mean square 1 per layer)."""
    fan_in = weight[0].numel()
    return unit_filters(weight).abs() * math.sqrt(fan_in)


class FanInLayout:
    """The weights of a list grouped by fan-in: the layers whose filters have the same number
    of entries ``K`` are stacked into one ``(filters, K)`` matrix, so per-filter work is
    row-wise on a few matrices (one per distinct fan-in, whatever the depth) and per-layer
    sums are segment sums over the filters. Depends on the shapes only (cached by them, see
    :func:`fan_in_layout`).

    Attributes:
        groups (list[tuple[int, list[int]]]): ``(K, layer indices)`` per group, in order.
        filter_layer (LongTensor): ``(F,)`` the layer of every filter, groups in order.
        layer_numels (Tensor): ``(L,)`` entries per layer.
    """

    def __init__(self, shapes, device, dtype):
        shapes = [torch.Size(s) for s in shapes]
        by_fan_in = {}
        for i, shape in enumerate(shapes):
            by_fan_in.setdefault(shape[1:].numel(), []).append(i)
        self.shapes = shapes
        self.num_layers = len(shapes)
        self.groups = list(by_fan_in.items())
        self.filters = [[shapes[i][0] for i in layers] for _, layers in self.groups]
        self.filter_layer = torch.cat([
            torch.repeat_interleave(torch.tensor(layers), torch.tensor(filters))
            for (_, layers), filters in zip(self.groups, self.filters)]).to(device)
        self.layer_numels = torch.tensor([s.numel() for s in shapes], dtype=dtype,
                                         device=device)
        # (L, F) 0/1: a matmul sums per layer, deterministic on every device (index_add_ is not)
        self.layer_of_filter = torch.nn.functional.one_hot(
            self.filter_layer, len(shapes)).t().to(dtype)

    def matrices(self, weights):
        """The ``(filters, K)`` matrix of every group (a view for a group of one layer)."""
        out = []
        for (fan_in, layers), filters in zip(self.groups, self.filters):
            rows = [weights[i].reshape(f, fan_in) for i, f in zip(layers, filters)]
            out.append(rows[0] if len(rows) == 1 else torch.cat(rows))
        return out

    def layer_sums(self, per_filter):
        """Per-filter values ``(F, ...)`` (groups in order) summed per layer: ``(L, ...)``."""
        return self.layer_of_filter @ per_filter


_LAYOUTS = {}


def fan_in_layout(weights):
    """The :class:`FanInLayout` of ``weights`` (built once per list of shapes, device, dtype)."""
    first = weights[0]
    key = (tuple(tuple(w.shape) for w in weights), first.device, first.dtype)
    layout = _LAYOUTS.get(key)
    if layout is None:
        if len(_LAYOUTS) >= 8:  # a few models per process at most; never grow without bound
            _LAYOUTS.clear()
        layout = _LAYOUTS[key] = FanInLayout(key[0], first.device, first.dtype)
    return layout


def _magnitudes(matrix):
    """``(u, |w|, per-filter scale, per-filter norm)`` of a ``(filters, K)`` matrix:
    ``u = |w| * sqrt(K) / max(||filter||, NORM_EPS)`` (no autograd; one home for the
    operations, so the thresholds and the penalty see the same bits)."""
    norms = torch.linalg.vector_norm(matrix, dim=1, keepdim=True)
    scale = math.sqrt(matrix.shape[1]) / norms.clamp_min(NORM_EPS)
    magnitude = matrix.abs()
    return magnitude * scale, magnitude, scale, norms


@torch.no_grad()
def grouped_scaled_magnitudes(weights):
    """:func:`scaled_magnitudes` of every weight as one ``(filters, K)`` matrix per fan-in
    group of :func:`fan_in_layout` (computed group-wise, not layer by layer)."""
    layout = fan_in_layout(weights)
    return [_magnitudes(m)[0] for m in layout.matrices([w.detach() for w in weights])]


@torch.no_grad()
def target_thresholds(weights, fraction):
    """Per layer, the magnitude (of :func:`scaled_magnitudes`) at or below which its
    ``fraction`` of smallest weights lie: the border of its target set.

    Computed from :func:`grouped_scaled_magnitudes`, bit for bit the magnitudes
    :func:`gap_penalty` compares with the border, so the k-th smallest entry is in its
    target set. (The selection runs every ``update_interval`` steps, not every step.)"""
    layout = fan_in_layout(weights)
    borders = [None] * layout.num_layers
    for u, (_, layers), filters in zip(grouped_scaled_magnitudes(weights), layout.groups,
                                       layout.filters):
        for i, part in zip(layers, u.split(filters)):
            k = max(1, min(part.numel(), int(round(fraction * part.numel()))))
            borders[i] = part.reshape(-1).kthvalue(k).values
    return torch.stack(borders)


class _GapPenalty(torch.autograd.Function):
    """The penalty of all layers, one fan-in group at a time, with its gradient written out
    (autograd through the same steps runs about twice as many kernels).

    With ``q_i`` the derivative of the penalty by ``u_i`` (``1 / (L n_target)`` in a target
    set, ``-1 / (L n_kept)`` where a kept entry's hinge is active, else 0), ``s_f`` the scale
    ``sqrt(K) / ||w_f||`` of entry i's filter f and ``D_f = sum_{j in f} q_j |w_j| /
    ||w_f||^2`` (0 where the norm is clamped, as ``clamp_min`` passes no gradient there):

        dP / dw_i = s_f * (q_i * sign(w_i) - w_i * D_f)
    """

    @staticmethod
    def forward(ctx, layout, borders, margin, *weights):
        border = borders.index_select(0, layout.filter_layer).unsqueeze(1)
        saved, sums, start = [], [], 0
        for matrix in layout.matrices([w.detach() for w in weights]):
            u, magnitude, scale, norms = _magnitudes(matrix)
            stop = start + matrix.shape[0]
            kept = (u > border[start:stop]).to(u.dtype)  # 0: in the layer's target set
            hinge = (margin - u).clamp_min_(0).mul_(kept)
            u_kept = u.mul_(kept)  # u is not needed any more
            sums.append(torch.stack([magnitude.mul(scale).sum(1) - u_kept.sum(1),
                                     hinge.sum(1), kept.sum(1)], dim=1))
            saved += [matrix, magnitude, scale, norms, kept, hinge]
            start = stop
        per_layer = layout.layer_sums(torch.cat(sums))
        n_kept = per_layer[:, 2]
        n_target = (layout.layer_numels - n_kept).clamp_min(1)
        n_kept = n_kept.clamp_min(1)
        ctx.layout = layout
        ctx.save_for_backward(n_target, n_kept, *saved)
        return (per_layer[:, 0] / n_target + per_layer[:, 1] / n_kept).sum() / layout.num_layers

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        n_target, n_kept, *saved = ctx.saved_tensors
        layout = ctx.layout
        # per filter: grad / (L n_target) and grad / (L n_kept) of its layer
        coefficients = torch.stack([grad / (layout.num_layers * n_target),
                                    grad / (layout.num_layers * n_kept)], dim=1)
        coefficients = coefficients.index_select(0, layout.filter_layer)
        grads = [None] * layout.num_layers
        start = 0
        for g, ((_, layers), filters) in enumerate(zip(layout.groups, layout.filters)):
            matrix, magnitude, scale, norms, kept, hinge = saved[6 * g:6 * g + 6]
            stop = start + matrix.shape[0]
            to_target, to_kept = coefficients[start:stop].unbind(1)
            # q (times grad): +to_target in the target set, -to_kept where the hinge acts
            q = (1 - kept).mul_(to_target.unsqueeze(1))
            q.sub_((hinge > 0).to(q.dtype).mul_(to_kept.unsqueeze(1)))
            d = (q * magnitude).sum(1, keepdim=True)
            d = torch.where(norms >= NORM_EPS, d / norms.clamp_min(NORM_EPS).square(), 0.0)
            q.mul_(matrix.sign()).sub_(matrix * d).mul_(scale)
            for i, rows in zip(layers, q.split(filters)):
                grads[i] = rows.reshape(layout.shapes[i])
            start = stop
        return (None, None, None, *grads)


def gap_penalty(weights, thresholds, margin):
    """The penalty of the module docstring (differentiable in ``weights``), computed a fan-in
    group at a time (see the module docstring).

    Args:
        weights (list[Tensor]): The conv weights (raw; normalised here).
        thresholds (Tensor): One border per weight, from :func:`target_thresholds`.
        margin (float): Hinge margin on the scaled magnitude of the kept weights.
    """
    layout = fan_in_layout(weights)
    borders = thresholds.to(device=weights[0].device, dtype=weights[0].dtype)
    return _GapPenalty.apply(layout, borders, float(margin), *weights)


@torch.no_grad()
def gap_statistics(weights, masks):
    """Mean scaled magnitude of the pruned and kept entries and their ratio, over layers."""
    pruned, kept = [], []
    for weight, mask in zip(weights, masks):
        u = scaled_magnitudes(weight)
        pruned.append(u[~mask].mean() if (~mask).any() else u.new_zeros(()))
        kept.append(u[mask].mean() if mask.any() else u.new_zeros(()))
    p, k = torch.stack(pruned).mean().item(), torch.stack(kept).mean().item()
    return dict(pruned_magnitude=p, kept_magnitude=k, gap_ratio=k / max(p, 1e-12))
