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


def _inverse_norms(weights):
    """Per weight, ``1 / max(||w_f||, NORM_EPS)`` shaped to broadcast over its filters, and the
    same times ``||w_f|| >= NORM_EPS`` (the projection's factor: ``clamp_min`` passes no
    gradient where it clamps). The norms of all weights are clamped and inverted as one
    vector: the per-layer work is the norm itself, not five small kernels."""
    norms = torch.cat([torch.linalg.vector_norm(w.flatten(1), dim=1) for w in weights])
    inverse = norms.clamp_min(NORM_EPS).reciprocal_()
    live = inverse * (norms >= NORM_EPS)
    sizes = [w.shape[0] for w in weights]
    shapes = [(-1, *([1] * (w.dim() - 1))) for w in weights]
    return ([x.view(s) for x, s in zip(inverse.split(sizes), shapes)],
            [x.view(s) for x, s in zip(live.split(sizes), shapes)])


class UnitFilterGraph:
    """Marks whether the backward of one :func:`unit_filter_list` call has run (its saved
    tensors are then freed, so its outputs must not enter a new graph)."""
    consumed = False


class _UnitFilterList(torch.autograd.Function):
    """``w / max(||w_f||, NORM_EPS)`` per filter f of every weight of a list, one autograd node
    for all of them, with the gradient written out: ``(g - u * <g, u>_f) / ||w_f||``
    (``g / NORM_EPS`` where the norm is clamped). Per weight the backward is one dot product
    per filter and two passes (``g * inverse``, then ``+= u * coefficient``); autograd through
    ``norm``, ``clamp`` and a broadcasting ``div`` runs twice as many kernels, and one Python
    node per conv cost more than the arithmetic at ResNet-18-w16's sizes (issue 22)."""

    @staticmethod
    def forward(ctx, graph, *weights):
        inverses, lives = _inverse_norms(weights)
        units = torch._foreach_mul(weights, inverses)
        ctx.graph = graph
        ctx.set_materialize_grads(False)  # an unused unit (conv not run) gets no gradient
        ctx.save_for_backward(*units, *inverses, *lives)
        return tuple(units)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        if ctx.graph is not None:
            ctx.graph.consumed = True
        n = len(grads)
        saved = ctx.saved_tensors
        live = [i for i, g in enumerate(grads) if g is not None]
        if not live:
            return (None, ) * (n + 1)
        units = [saved[i] for i in live]
        grads_in = [grads[i] for i in live]
        inverses = [saved[n + i] for i in live]
        # -<g, u>_f / ||w_f|| per filter (0 where clamped)
        coefficients = [torch.linalg.vecdot(g.flatten(1), u.flatten(1)).view_as(p)
                        for g, u, p in zip(grads_in, units, (saved[2 * n + i] for i in live))]
        torch._foreach_mul_(coefficients, [saved[2 * n + i] for i in live])
        torch._foreach_neg_(coefficients)
        out = torch._foreach_mul(grads_in, inverses)
        torch._foreach_addcmul_(out, units, coefficients)
        result = [None] * n
        for i, g in zip(live, out):
            result[i] = g
        return (None, *result)


def unit_filter_list(weights, graph=None, functions=None):
    """:func:`unit_filters` of every weight of a list, computed together (one autograd node:
    see :class:`_UnitFilterList`); the same bits as :func:`unit_filters` of each. ``graph``
    (a :class:`UnitFilterGraph`) is marked consumed when the node's backward runs.
    ``functions``: compiled drop-ins (:func:`mmrecprune.ops.onthefly_functions`) whose
    ``unit_filters`` computes the node instead, or None for eager PyTorch."""
    weights = list(weights)
    if not weights:
        return []
    if functions is not None:
        return list(functions.unit_filters(graph, *weights))
    if torch.is_grad_enabled() and any(w.requires_grad for w in weights):
        return list(_UnitFilterList.apply(graph, *weights))
    return torch._foreach_mul(weights, _inverse_norms(weights)[0])


def unit_filters(weight):
    """``weight`` with every output filter (dim 0) scaled to unit L2 norm (an all-zero filter
    stays zero: norms are clamped to :data:`NORM_EPS`)."""
    return unit_filter_list([weight])[0]


class HypersphericalConv2d(nn.Conv2d):
    """``nn.Conv2d`` that convolves with :func:`unit_filters` of its weight (same arguments,
    same parameter names). Within a forward of a module with :class:`SharedUnitFilters`, it
    uses the unit filters computed for all convs at once."""

    def forward(self, x):
        shared = self.__dict__.get('_shared_unit')
        if (shared is not None and shared[1] == self.weight._version
                and (shared[0].requires_grad or not torch.is_grad_enabled()
                     or not self.weight.requires_grad)):
            return self._conv_forward(x, shared[0], self.bias)
        return self._conv_forward(x, unit_filters(self.weight), self.bias)


class SharedUnitFilters:
    """Normalise the weights of every hyperspherical conv of ``module`` once per forward of
    ``module``, all together (:func:`unit_filter_list`), and hand each conv its unit filters;
    :meth:`units` gives the same tensors to a penalty on the normalised weights, so the
    normalisation runs once per step and its backward once for the convs' and the penalty's
    gradients together (issue 22).

    A forward pre-hook computes the unit filters and a forward hook takes them back from the
    convs, so a conv called outside a forward of ``module`` (or during a checkpointed
    recomputation) normalises its own weight. :meth:`remove` takes the hooks off.
    ``functions``: as :func:`unit_filter_list`'s. Where they compute the unit filters and the
    gap penalty in one node (``functions.units_and_penalty``), ``penalty_request`` (a callable
    set by the penalty's owner, the ``OnTheFlyPruner``) is asked before each forward with
    gradients for ``(names, borders, margin)``, or None for no penalty this step; the penalty
    is then computed with the unit filters, and :meth:`penalty` hands it over.
    """

    def __init__(self, module, functions=None):
        self.functions = functions
        self.penalty_request = None
        self.convs = hyperspherical_convs(module)
        self._units = {}  # name -> (unit, weight version) of the last forward
        self._penalty = None  # (penalty, conv names) of the last forward, if computed with them
        self._graph = None
        # (not always_call, which torch 2.0 lacks: after a forward that raised, a conv checks
        # its weight's version before using what is left; the next forward replaces it)
        self._handles = [module.register_forward_pre_hook(self._before_forward),
                         module.register_forward_hook(self._after_forward)]

    def __getstate__(self):  # a deepcopy (EMA) or pickle must not copy a graph's tensors
        # (nor the pruner behind penalty_request: a copy computes no penalty)
        return dict(self.__dict__, _units={}, _graph=None, _penalty=None, penalty_request=None)

    def _before_forward(self, module, args):
        convs = {n: c for n, c in self.convs.items() if isinstance(c, HypersphericalConv2d)}
        grad = torch.is_grad_enabled()
        trained = [n for n, c in convs.items() if grad and c.weight.requires_grad]
        fixed = [n for n in convs if n not in set(trained)]
        self._graph = UnitFilterGraph()
        self._penalty = None
        units = self._with_penalty(trained, fixed, convs)
        if units is None:
            units = dict(zip(trained, unit_filter_list([convs[n].weight for n in trained],
                                                       self._graph, self.functions)))
        fixed = [n for n in fixed if n not in units]
        with torch.no_grad():
            units.update(zip(fixed, unit_filter_list([convs[n].weight for n in fixed],
                                                     functions=self.functions)))
        self._units = {n: (units[n], convs[n].weight._version) for n in convs}
        for n, conv in convs.items():
            conv._shared_unit = self._units[n]

    def _with_penalty(self, trained, fixed, convs):
        """``{name: unit}`` of the ``trained`` convs, and of the ``fixed`` ones the penalty
        covers (a frozen stage: its terms count in the penalty, its weights get no gradient),
        from the one node that also computes the gap penalty (kept for :meth:`penalty`), or
        None where that does not apply."""
        fused = getattr(self.functions, 'units_and_penalty', None)
        request = (None if fused is None or self.penalty_request is None or not trained
                   else self.penalty_request())
        if request is None:
            return None
        names, borders, margin = request
        covered = set(names)
        inputs = trained + [n for n in fixed if n in covered]
        index = {n: i for i, n in enumerate(inputs)}
        if not covered <= set(index):
            return None
        per_weight = torch.full((len(inputs), ), float('nan'))
        per_weight[[index[n] for n in names]] = borders.detach().float().cpu()
        out = fused(self._graph, per_weight, margin, *(convs[n].weight for n in inputs))
        if out is None:  # weights the kernels do not take
            return None
        *units, penalty = out
        self._penalty = (penalty, tuple(names))
        return dict(zip(inputs, units))

    def penalty(self, names):
        """The gap penalty of the convs ``names`` computed with the unit filters of the last
        forward (see the class docstring), or None where there is none to reuse."""
        if (self._penalty is None or self._penalty[1] != tuple(names)
                or self.units(names) is None):
            return None
        return self._penalty[0]

    def _after_forward(self, module, args, output):
        for conv in self.convs.values():
            conv.__dict__.pop('_shared_unit', None)

    def units(self, names):
        """The unit filters of the convs ``names`` from the last forward, or None where they
        cannot be reused: a weight changed since, the graph's backward has run, or they were
        computed without autograd and gradients are wanted now."""
        if self._graph is None or self._graph.consumed:
            return None
        out = []
        for name in names:
            entry = self._units.get(name)
            conv = self.convs.get(name)
            if entry is None or entry[1] != conv.weight._version:
                return None
            if (torch.is_grad_enabled() and conv.weight.requires_grad
                    and entry[0].grad_fn is None):
                return None
            out.append(entry[0])
        return out

    def remove(self):
        """Take the hooks off (the convs normalise their own weights again)."""
        for handle in self._handles:
            handle.remove()
        self._after_forward(None, None, None)
        self._units, self._graph, self._penalty = {}, None, None


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
