"""Least-squares reconstruction: re-fit the layers that read pruned channels, with no training.

When a channel group is cut, the layers that *read* its channels (its ``conv_in`` /
``linear_in`` members, the "consumers") lose part of their input. Their output can be
brought back towards the dense network's from calibration data alone:

* ``'mean'`` (mean-value recovery): the weights stay; the mean of what the cut removed
  (``E[Y] - E[X] W``, Y the dense layer's output, X the pruned network's kept inputs) is added
  back as a constant per output channel, folded into the layer's bias or the running mean of
  the BatchNorm that reads it. This is the structured counterpart of on-the-fly pruning's
  mean-value recovery (:mod:`.recovery`): a removed channel is replaced by its mean
  activation instead of zero.
* ``'least_squares'``: the weights on the kept input channels are re-fitted so that the
  layer's output on the calibration activations matches the dense network's,
  ``min_W ||Y - X W||^2 + lambda ||W - W_0||^2`` (ridge towards the original weights), solved
  per layer from the normal equations (Cholesky; ``torch.linalg.lstsq`` if that fails). For a
  conv, X holds the im2col patches (``unfold``) of the kept input channels at sampled spatial
  positions (He et al. 2017, "Channel Pruning for Accelerating Very Deep Neural Networks";
  Luo et al. 2017, ThiNet).
* ``'least_squares+mean'``: both, i.e. the least-squares fit with an intercept (the intercept
  is not penalised), folded like ``'mean'``.

Layers are re-fitted one group at a time in module order, each from the inputs of the network
pruned and re-fitted so far, against the dense network's outputs, so errors of earlier layers
are compensated by later ones (the sequential scheme of He et al. and of Kwon et al. 2022,
"A Fast Post-Training Pruning Framework for Transformers"). The normal equations are
accumulated batch by batch in float64, so memory is bounded by one batch's patches whatever
the number of calibration images.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from .bn_recalibration import batch_size_of
from .channel_groups import CONSUMER_KINDS, ChannelGroup

#: What :func:`reconstruct_consumers` can do to a consumer layer
RECONSTRUCTION_MODES = ('mean', 'least_squares', 'least_squares+mean')


def check_reconstruction(mode: str | None) -> str | None:
    if mode is not None and mode not in RECONSTRUCTION_MODES:
        raise ValueError(f'reconstruction must be None or one of {RECONSTRUCTION_MODES}, got '
                         f'{mode!r}')
    return mode


def following_norms(model: nn.Module, example_input: Any,
                    forward: Callable[[nn.Module, Any], Any] | None = None) -> dict[str, str]:
    """``{layer name: norm name}`` for every conv / linear layer whose output goes straight
    into a BatchNorm (and nowhere else first), found from one traced eval pass."""
    forward = forward or (lambda m, x: m(x))
    producer, found, handles = {}, {}, []
    alive = []

    def layer_hook(name):
        def record(module, args, output):
            if isinstance(output, torch.Tensor):
                producer[id(output)] = name
                alive.append(output)
        return record

    def norm_hook(name):
        def record(module, args):
            if args and isinstance(args[0], torch.Tensor) and id(args[0]) in producer:
                found.setdefault(producer[id(args[0])], name)
        return record

    for name, m in model.named_modules():
        if isinstance(m, (_ConvNd, nn.Linear)):
            handles.append(m.register_forward_hook(layer_hook(name)))
        elif isinstance(m, _BatchNorm):
            handles.append(m.register_forward_pre_hook(norm_hook(name)))
    flags = [(m, m.training) for m in model.modules()]
    try:
        for m, _ in flags:
            m.training = False
        with torch.no_grad():
            forward(model, example_input)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.training = flag
    return found


def layer_rows(layer: nn.Module, x: torch.Tensor, channels: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> torch.Tensor:
    """The rows ``X`` with ``layer(x) = X @ W.T (+ bias)``: ``[rows, C_in * prod(kernel)]``.

    For a 2-d conv, the im2col patches of ``x`` (rows: image x output position), for a linear
    layer ``x`` itself. ``channels`` keeps only those input channels (their patches, in the
    same order as ``weight[:, channels].flatten(1)``); ``positions`` keeps only those output
    positions (flat indices, the same for every image).
    """
    if channels is not None:
        x = x.index_select(1, channels)
    if isinstance(layer, nn.Linear):
        return x
    if not isinstance(layer, nn.Conv2d) or layer.groups != 1:
        raise TypeError(f'least-squares reconstruction covers Conv2d (groups=1) and Linear '
                        f'layers, not {layer}')
    if layer.padding_mode != 'zeros' or isinstance(layer.padding, str):
        padding = layer._reversed_padding_repeated_twice  # 'same' / non-zero padding modes
        mode = 'constant' if layer.padding_mode == 'zeros' else layer.padding_mode
        x = F.pad(x, padding, mode=mode)
        pad = 0
    else:
        pad = layer.padding
    cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=pad,
                    stride=layer.stride)  # [N, C * kh * kw, L]
    if positions is not None:
        cols = cols.index_select(2, positions.to(cols.device))
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def output_positions(layer: nn.Module, x: torch.Tensor) -> int:
    """Output positions per image of ``layer`` on input ``x`` (1 for a linear layer)."""
    if isinstance(layer, nn.Linear):
        return 1
    out = [(s + 2 * p - d * (k - 1) - 1) // st + 1 for s, p, d, k, st in zip(
        x.shape[2:], _pad2(layer, x), layer.dilation, layer.kernel_size, layer.stride)]
    return out[0] * out[1]


def _pad2(layer, x):
    if isinstance(layer.padding, str):  # 'same' keeps the size at stride 1, 'valid' pads 0
        return [(d * (k - 1)) // 2 if layer.padding == 'same' else 0
                for d, k in zip(layer.dilation, layer.kernel_size)]
    return layer.padding


class NormalEquations:
    """``sum X^T X``, ``sum X^T Y``, the sums of X, Y and Y^2 over the calibration rows of one
    layer, in float64 (X: the pruned network's kept-input rows, Y: the dense layer's output)."""

    def __init__(self) -> None:
        self.xtx = self.xty = self.x_sum = self.y_sum = self.yty = None
        self.rows = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.double(), y.double()
        if self.xtx is None:
            self.xtx = x.new_zeros(x.shape[1], x.shape[1])
            self.xty = x.new_zeros(x.shape[1], y.shape[1])
            self.x_sum, self.y_sum = x.new_zeros(x.shape[1]), y.new_zeros(y.shape[1])
            self.yty = y.new_zeros(y.shape[1])
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self.x_sum += x.sum(0)
        self.y_sum += y.sum(0)
        self.yty += y.pow(2).sum(0)
        self.rows += x.shape[0]

    def __add__(self, other: 'NormalEquations') -> 'NormalEquations':
        if self.xtx is None:
            return other
        if other.xtx is None:
            return self
        out = NormalEquations()
        for key in ('xtx', 'xty', 'x_sum', 'y_sum', 'yty'):
            setattr(out, key, getattr(self, key) + getattr(other, key))
        out.rows = self.rows + other.rows
        return out

    def error(self, w: torch.Tensor, shift: torch.Tensor | None = None) -> float:
        """``sum ||y - W x - shift||^2`` over the rows, from the sums alone."""
        w = w.to(self.xtx)
        err = self.yty.sum() - 2 * (w * self.xty.T).sum() + ((w @ self.xtx) * w).sum()
        if shift is not None:
            shift = shift.to(self.xtx)
            err = err - 2 * (shift * (self.y_sum - w @ self.x_sum)).sum() \
                + self.rows * shift.pow(2).sum()
        return float(err)


#: the ridges ``'auto'`` tries, relative to the mean diagonal of ``X^T X``
AUTO_RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def solve_layer(eq: NormalEquations, w0: torch.Tensor, fit_weights: bool, fit_shift: bool,
                ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weights ``[C_out, F]`` (``w0`` if not ``fit_weights``) and output shift ``[C_out]``
    (None if not ``fit_shift``) minimising ``||Y - X W^T - shift||^2 + lambda ||W - w0||^2``,
    with ``lambda = ridge * mean(diag(X^T X))``."""
    if eq.rows == 0:
        raise ValueError('least-squares reconstruction got no calibration rows')
    w0 = w0.detach().double().cpu()
    n = eq.rows
    if not fit_weights:
        shift = (eq.y_sum.cpu() - eq.x_sum.cpu() @ w0.T) / n if fit_shift else None
        return w0, shift
    xtx, xty = eq.xtx.cpu(), eq.xty.cpu()
    if fit_shift:  # centre: the intercept absorbs the means, the ridge does not touch it
        mx, my = eq.x_sum.cpu() / n, eq.y_sum.cpu() / n
        xtx = xtx - n * torch.outer(mx, mx)
        xty = xty - n * torch.outer(mx, my)
    lam = ridge * float(xtx.diagonal().mean().clamp_min(1e-12))
    a = xtx + lam * torch.eye(xtx.shape[0], dtype=xtx.dtype)
    b = xty + lam * w0.T
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        w = torch.cholesky_solve(b, chol).T
    else:  # not positive definite (e.g. ridge=0 and dead inputs): least squares instead
        w = torch.linalg.lstsq(a, b, driver='gelsd').solution.T
    shift = (my - mx @ w.T) if fit_shift else None
    return w, shift


def select_ridge(folds: Sequence[NormalEquations], w0: torch.Tensor, fit_shift: bool,
                 ridges: Sequence[float] = AUTO_RIDGES) -> float | None:
    """The ridge of ``ridges`` whose fit predicts held-out calibration rows best (each fold
    fitted on the others, errors summed), or None when keeping ``w0`` (with the mean shift if
    ``fit_shift``) predicts them better than every fit: a re-fit that would overfit the few
    rows of a deep, low-resolution layer is not made."""
    folds = [f for f in folds if f.rows]
    if len(folds) < 2:
        return ridges[len(ridges) // 2] if ridges else None
    best, best_err = None, 0.0
    for j, held in enumerate(folds):
        rest = sum((f for i, f in enumerate(folds) if i != j), NormalEquations())
        w, shift = solve_layer(rest, w0, False, fit_shift)
        best_err += held.error(w, shift)
    for ridge in ridges:
        err = 0.0
        for j, held in enumerate(folds):
            rest = sum((f for i, f in enumerate(folds) if i != j), NormalEquations())
            w, shift = solve_layer(rest, w0, True, fit_shift, ridge)
            err += held.error(w, shift)
        if err < best_err:
            best, best_err = ridge, err
    return best


@torch.no_grad()
def fold_output_shift(modules: Mapping[str, nn.Module], layer: str, shift: torch.Tensor,
                      norms: Mapping[str, str]) -> str | None:
    """Add ``shift`` to ``layer``'s output: into its bias, else into the running mean of the
    BatchNorm that reads it (``running_mean -= shift``). Returns where it went (None: nowhere,
    the layer has neither)."""
    module = modules[layer]
    if getattr(module, 'bias', None) is not None:
        module.bias.add_(shift.to(module.bias))
        return f'{layer}.bias'
    norm = modules.get(norms.get(layer, ''))
    if norm is not None and norm.running_mean is not None:
        norm.running_mean.sub_(shift.to(norm.running_mean))
        return f'{norms[layer]}.running_mean'
    return None


def _consumers(group: ChannelGroup) -> list[str]:
    return [name for name, kind in group.members if kind in CONSUMER_KINDS]


@torch.no_grad()
def reconstruct_consumers(dense: nn.Module, pruned: nn.Module, groups: Sequence[ChannelGroup],
                          masks: Mapping[str, torch.Tensor], batches: Iterable[Any],
                          mode: str = 'least_squares', ridge: float | str = 'auto',
                          positions_per_image: int | None = 64,
                          norms: Mapping[str, str] | None = None,
                          forward: Callable[[nn.Module, Any], Any] | None = None,
                          progress: Callable[[int], None] | None = None,
                          seed: int = 0) -> dict:
    """Re-fit, in ``pruned``, the consumers of every cut group, one group at a time.

    ``pruned`` has ``dense``'s shapes and module names with the cut channels zeroed (soft
    masks, :func:`~.channel_masks.apply_channel_masks`); it may be slimmed afterwards
    (the consumers' weights on cut channels are set to zero here, so slimming is exact).

    Args:
        dense (nn.Module): The unpruned network (read only).
        pruned (nn.Module): The soft-pruned network, changed in place.
        groups (Sequence[ChannelGroup]): Channel groups (of both networks), in module order.
        masks (Mapping[str, Tensor]): Keep-mask per group; groups keeping every channel are
            skipped.
        batches (Iterable): Calibration inputs; iterated once per cut group (give a list).
        mode (str): One of :data:`RECONSTRUCTION_MODES`.
        ridge (float | str): Ridge strength relative to the mean diagonal of ``X^T X``, or
            ``'auto'`` (default): per layer, the one of :data:`AUTO_RIDGES` that predicts
            held-out calibration batches best (2 folds by batch), or no re-fit of the weights
            where none beats the original weights (:func:`select_ridge`).
        positions_per_image (int, optional): Output positions sampled per image (the same
            for every image of a batch) to bound memory; None: all.
        norms (Mapping[str, str], optional): :func:`following_norms` of ``pruned`` (where an
            output shift folds when a layer has no bias); traced on the first batch if None.
        forward (callable, optional): ``forward(model, batch)``. Defaults to ``model(batch)``.
        progress (callable, optional): Called with the images of every batch of every pass.
        seed (int): Seed of the position sampling.

    Returns:
        dict: Per consumer layer: ``rows`` (calibration rows fitted), ``error_before`` (squared
        error of its output, bias aside, on those rows before the fit, relative to the dense
        output's), ``ridge`` (the one used; None: weights kept) and ``shift`` (where the
        output shift was folded, or None).
    """
    check_reconstruction(mode)
    if ridge != 'auto' and (not isinstance(ridge, (int, float)) or ridge < 0):
        raise ValueError(f"ridge must be 'auto' or a number >= 0, got {ridge!r}")
    forward = forward or (lambda m, x: m(x))
    batches = list(batches)
    if not batches:
        raise ValueError('least-squares reconstruction needs calibration batches')
    if norms is None:
        norms = following_norms(pruned, batches[0], forward)
    fit_weights, fit_shift = mode != 'mean', mode != 'least_squares'
    d_modules, p_modules = dict(dense.named_modules()), dict(pruned.named_modules())
    generator = torch.Generator().manual_seed(seed)
    report = {}
    flags = [(m, m.training) for m in list(dense.modules()) + list(pruned.modules())]
    for m, _ in flags:
        m.training = False
    try:
        for g in groups:
            keep = masks.get(g.name)
            if keep is None or keep.all():
                continue
            keep_idx = keep.bool().flatten().nonzero().flatten()
            layers = _consumers(g)
            inputs: dict = {}
            handles = []
            for model_key, modules in (('dense', d_modules), ('pruned', p_modules)):
                for name in layers:
                    def capture(module, args, key=(model_key, name)):
                        inputs[key] = args[0]
                    handles.append(modules[name].register_forward_pre_hook(capture))
            folds = {name: [NormalEquations(), NormalEquations()] for name in layers}
            errors = {name: [0.0, 0.0] for name in layers}
            try:
                for b, batch in enumerate(batches):
                    forward(dense, batch)
                    forward(pruned, batch)
                    for name in layers:
                        layer, x_d, x_p = d_modules[name], inputs[('dense', name)], \
                            inputs[('pruned', name)]
                        pos = None
                        total = output_positions(layer, x_d)
                        if positions_per_image is not None and total > positions_per_image:
                            pos = torch.randperm(total, generator=generator)[
                                :positions_per_image].sort().values
                        w_d = layer.weight.flatten(1)
                        y = layer_rows(layer, x_d, None, pos) @ w_d.T
                        x = layer_rows(layer, x_p, keep_idx.to(x_p.device), pos)
                        folds[name][b % 2].add(x, y)
                        w_p = p_modules[name].weight.index_select(
                            1, keep_idx.to(w_d.device)).flatten(1)
                        errors[name][0] += float((y - x @ w_p.T).double().pow(2).sum())
                        errors[name][1] += float(y.double().pow(2).sum())
                    inputs.clear()
                    if progress is not None:
                        progress(batch_size_of(batch))
            finally:
                for h in handles:
                    h.remove()
            for name in layers:
                module = p_modules[name]
                shape = module.weight.shape
                w0 = module.weight.index_select(1, keep_idx.to(module.weight.device))
                eq = folds[name][0] + folds[name][1]
                used = ridge
                if fit_weights and ridge == 'auto':
                    used = select_ridge(folds[name], w0.flatten(1), fit_shift)
                w, shift = solve_layer(eq, w0.flatten(1), fit_weights and used is not None,
                                       fit_shift, used or 0.0)
                new = torch.zeros_like(module.weight)
                new.index_copy_(1, keep_idx.to(new.device),
                                w.reshape(shape[0], len(keep_idx), *shape[2:]).to(new))
                module.weight.copy_(new)
                where = None
                if shift is not None:
                    where = fold_output_shift(p_modules, name, shift, norms)
                report[name] = dict(rows=eq.rows, shift=where,
                                    ridge=used if fit_weights else None,
                                    error_before=errors[name][0] / max(errors[name][1], 1e-30))
        return report
    finally:
        for m, flag in flags:
            m.training = flag


@torch.no_grad()
def layer_output_error(dense: nn.Module, pruned: nn.Module, layer: str,
                       batches: Iterable[Any],
                       forward: Callable[[nn.Module, Any], Any] | None = None) -> float:
    """Mean squared difference between ``layer``'s output in ``pruned`` and in ``dense`` on
    ``batches``, relative to the dense output's mean square (eval mode, both networks)."""
    forward = forward or (lambda m, x: m(x))
    outs, num, den = {}, 0.0, 0.0
    handles = [dict(dense.named_modules())[layer].register_forward_hook(
                   lambda m, a, o: outs.__setitem__('dense', o)),
               dict(pruned.named_modules())[layer].register_forward_hook(
                   lambda m, a, o: outs.__setitem__('pruned', o))]
    flags = [(m, m.training) for m in list(dense.modules()) + list(pruned.modules())]
    try:
        for m, _ in flags:
            m.training = False
        for batch in batches:
            forward(dense, batch)
            forward(pruned, batch)
            num += float((outs['pruned'] - outs['dense']).double().pow(2).sum())
            den += float(outs['dense'].double().pow(2).sum())
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.training = flag
    return num / max(den, 1e-30)
