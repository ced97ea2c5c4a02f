"""Hyperspherical convolutions: every filter is used at unit norm (on-the-fly pruning).

A :class:`HypersphericalConv2d` is an ``nn.Conv2d`` whose forward uses each output filter
divided by its L2 norm, so the output depends on the filter's direction only; the norm layer
that follows restores the range. :func:`fold_hyperspherical` turns them back into plain
``nn.Conv2d`` holding the unit-norm weights, which compute the same function exactly (up to
float rounding), so an exported ticket is an ordinary backbone.

Why a conv class and not ``torch.nn.utils.parametrize``: a parametrization renames the weight in
the state_dict (``conv.parametrizations.weight.original``), so checkpoints of the same config
(resume, ``load_from`` of a dense checkpoint, ``tools/test.py``) stop lining up unless the model
is re-parametrized at exactly the right moment of MMEngine's start-up, and MMEngine's
``kaiming_init(conv)`` writes into the parametrized ``conv.weight``, a temporary, so the
backbone's own initialisation would be silently skipped. A subclass keeps the parameter named
``weight`` (raw values, any scale), is built by MMCV's ``build_conv_layer`` through a backbone's
``conv_cfg`` everywhere the config is used, and folds back by a class change.

Plain PyTorch: the registration under ``mmrecprune.HypersphericalConv`` lives in
:mod:`mmrecprune.models`.
"""
import torch
from torch import nn

#: A filter whose norm is below this is treated as all-zero (it then outputs zeros).
NORM_EPS = 1e-12


class _UnitFilters(torch.autograd.Function):
    """``w / max(||w_f||, NORM_EPS)`` per filter f, with the gradient written out:
    ``(g - u * <g, u>_f) / ||w_f||`` (``g / NORM_EPS`` where the norm is clamped, as
    ``clamp_min`` passes no gradient there). Autograd through ``norm``, ``clamp`` and a
    broadcasting ``div`` runs twice as many kernels, some of them slow broadcasting
    reductions, in every training step of every hyperspherical conv."""

    @staticmethod
    def forward(ctx, weight):
        norms = torch.linalg.vector_norm(weight.flatten(1), dim=1)
        inverse = norms.clamp_min(NORM_EPS).reciprocal_().view(-1, *([1] * (weight.dim() - 1)))
        unit = weight * inverse
        ctx.save_for_backward(unit, inverse, norms >= NORM_EPS)
        return unit

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        unit, inverse, unclamped = ctx.saved_tensors
        along = (grad * unit).flatten(1).sum(dim=1) * unclamped  # <g, u> per filter
        return (grad - unit * along.view_as(inverse)) * inverse


def unit_filters(weight):
    """``weight`` with every output filter (dim 0) scaled to unit L2 norm (an all-zero filter
    stays zero: norms are clamped to :data:`NORM_EPS`)."""
    if torch.is_grad_enabled() and weight.requires_grad:
        return _UnitFilters.apply(weight)
    norms = torch.linalg.vector_norm(weight.flatten(1), dim=1)  # the same bits as with grad
    return weight * norms.clamp_min(NORM_EPS).reciprocal_().view(-1, *([1] * (weight.dim() - 1)))


class HypersphericalConv2d(nn.Conv2d):
    """``nn.Conv2d`` that convolves with :func:`unit_filters` of its weight (same arguments,
    same parameter names)."""

    def forward(self, x):
        return self._conv_forward(x, unit_filters(self.weight), self.bias)


def hyperspherical_convs(module):
    """``{name: conv}`` of the hyperspherical convs inside ``module``, in module order."""
    return {n: m for n, m in module.named_modules() if isinstance(m, HypersphericalConv2d)}


@torch.no_grad()
def fold_conv(conv):
    """Turn one :class:`HypersphericalConv2d` into a plain ``nn.Conv2d`` in place (its weight
    becomes the unit-norm filters it used); the same object, the same parameters."""
    if not isinstance(conv, HypersphericalConv2d):
        raise TypeError(f'fold_conv folds a HypersphericalConv2d; got {type(conv).__name__} '
                        '(plain convs need no folding; other layer types cannot be folded)')
    conv.weight.copy_(unit_filters(conv.weight))
    conv.__class__ = nn.Conv2d
    return conv


def fold_hyperspherical(module):
    """Fold every hyperspherical conv of ``module`` in place; returns their names. A module
    with none is an error (nothing to fold: the wrong model, or already folded)."""
    convs = hyperspherical_convs(module)
    if not convs:
        raise ValueError(f'{type(module).__name__} has no hyperspherical convs to fold (already '
                         'folded, or not built with conv_cfg=dict(type='
                         '"mmrecprune.HypersphericalConv"))')
    for conv in convs.values():
        fold_conv(conv)
    return list(convs)


def make_hyperspherical(module, names=None):
    """Turn plain ``nn.Conv2d`` (all, or those in ``names``) into hyperspherical ones in place,
    keeping their parameters (e.g. to fine-tune a dense checkpoint on-the-fly). The function
    changes: BN statistics computed for the raw filters no longer fit until re-estimated."""
    changed = []
    for name, m in module.named_modules():
        if type(m) is nn.Conv2d and (names is None or name in names):
            m.__class__ = HypersphericalConv2d
            changed.append(name)
    return changed


def strip_conv_cfg(backbone_cfg):
    """The backbone config of a folded model: ``conv_cfg`` of the hyperspherical type is
    removed, so the ticket builds an ordinary backbone."""
    cfg = dict(backbone_cfg)
    conv_cfg = cfg.get('conv_cfg')
    if isinstance(conv_cfg, dict) and 'HypersphericalConv' in str(conv_cfg.get('type')):
        cfg.pop('conv_cfg')
    return cfg
