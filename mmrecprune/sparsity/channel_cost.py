"""Exact FLOPs / parameters / channels of a model as a function of its kept channel widths.

The fast companion of :func:`count_flops_params` for structured pruning schedules: one traced
pass, then any candidate set of widths is costed with a vectorised product (same convention and
same numbers as counting the slimmed model).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from .channel_groups import ChannelGroup
from .flops import COSTED_LAYERS, layer_call, shape_forward


class ChannelCostModel:
    """FLOPs, parameters and channel count of a model as an exact function of kept widths.

    One shape-only forward pass (:func:`~mmrecprune.sparsity.flops.shape_forward`) records, for
    every conv / linear / norm layer in ``scope``, how many output positions it computes; every
    FLOPs or parameter term is then ``coef * k_a * k_b`` where
    ``k_a``, ``k_b`` are the kept widths of the groups on the layer's output and input axes (or 1).
    Evaluating a candidate set of widths is one vectorised product, which lets the schedule bisect
    for a ratio in microseconds instead of slimming a copy per candidate. The convention is
    :func:`~mmrecprune.sparsity.count_flops_params`' (FLOPs = MACs, norm layers one MAC per
    output element), and the numbers equal what it reports on the slimmed model.

    Args:
        model (nn.Module): The model the groups were found on, called as ``model(example_input)``.
        groups (list[ChannelGroup]): Its prunable groups.
        example_input (Tensor): Input of the traced pass; FLOPs are for this input, batch
            included.
        scope (str): Only modules and parameters under this module name are counted, e.g.
            ``'backbone'``. Defaults to ``''`` (the whole model).
        layer_calls (list, optional): The conv / linear / norm calls of a shape-only pass
            already run on ``example_input``, as :func:`~mmrecprune.sparsity.find_channel_groups`
            records them (``layer_calls=``); then no pass of its own is run. Defaults to None.
    """

    def __init__(self, model: nn.Module, groups: Sequence[ChannelGroup],
                 example_input: torch.Tensor, scope: str = '',
                 layer_calls: list | None = None) -> None:
        self.num_groups = len(groups)
        self.dense_widths = torch.tensor([g.num_channels for g in groups], dtype=torch.long)
        axis = {}  # (module name, kind) -> group index
        for gi, g in enumerate(groups):
            for name, kind in g.members:
                axis[(name, kind)] = gi
        root = model.get_submodule(scope) if scope else model
        prefix = f'{scope}.' if scope else ''
        names = {m: prefix + n if n else scope for n, m in root.named_modules()}
        none = self.num_groups  # index of the constant 1 in the extended width vector
        flops_terms, param_terms = [], []

        def out_in(name):
            out = axis.get((name, 'conv_out'), axis.get((name, 'dwconv'),
                                                        axis.get((name, 'linear_out'), none)))
            return out, axis.get((name, 'conv_in'), axis.get((name, 'linear_in'), none))

        def weight_term(name, weight, positions):
            out, inp = out_in(name)
            coef = positions * math.prod(weight.shape[2:])
            coef *= weight.shape[0] if out == none else 1
            coef *= weight.shape[1] if inp == none else 1
            return coef, out, inp

        if layer_calls is None:
            layer_calls = []
            handles = [m.register_forward_hook(lambda *call: layer_calls.append(layer_call(*call)))
                       for m in root.modules() if isinstance(m, COSTED_LAYERS)]
            try:
                shape_forward(model, example_input)
            finally:
                for h in handles:
                    h.remove()
        for module, in_shape, out_shape in layer_calls:
            name = names.get(module)
            if name is None or not isinstance(module, COSTED_LAYERS):
                continue  # outside the scope
            if isinstance(module, _ConvNd):
                if module.transposed:  # never in a group: a constant
                    pos = in_shape[0] * math.prod(in_shape[2:])
                    flops_terms.append((pos * module.weight.numel(), none, none))
                else:
                    pos = out_shape[0] * math.prod(out_shape[2:])
                    flops_terms.append(weight_term(name, module.weight, pos))
            elif isinstance(module, nn.Linear):
                flops_terms.append(weight_term(name, module.weight,
                                               math.prod(out_shape) // module.out_features))
            elif out_shape is not None:
                gi = axis.get((name, 'bn'), none)
                width = out_shape[1] if gi != none else 1
                flops_terms.append((math.prod(out_shape) // width, gi, none))
        for module, name in names.items():
            for attr, p in module.named_parameters(recurse=False):
                terms = [(p.numel(), none, none)]
                if attr == 'weight' and isinstance(module, (_ConvNd, nn.Linear)) \
                        and not getattr(module, 'transposed', False):
                    terms = [weight_term(name, p, 1)]
                elif attr == 'bias' and isinstance(module, (_ConvNd, nn.Linear)):
                    out, _ = out_in(name)
                    terms = [(1 if out != none else p.numel(), out, none)]
                elif isinstance(module, _BatchNorm) and (name, 'bn') in axis:
                    terms = [(1, axis[(name, 'bn')], none)]
                param_terms += terms
        self._terms = {metric: self._pack(terms) for metric, terms in
                       (('flops', flops_terms), ('params', param_terms))}

    @staticmethod
    def _pack(terms):
        coef, a, b = zip(*terms) if terms else ((), (), ())
        return (torch.tensor(coef, dtype=torch.long), torch.tensor(a, dtype=torch.long),
                torch.tensor(b, dtype=torch.long))

    def cost(self, widths: torch.Tensor, metric: str = 'flops') -> int:
        """Cost with the groups at ``widths`` (LongTensor of kept channels in group order)."""
        widths = widths.long().cpu()
        if metric == 'channels':
            return int(widths.sum())
        coef, a, b = self._terms[metric]
        ext = torch.cat([widths, torch.ones(1, dtype=torch.long)])
        return int((coef * ext[a] * ext[b]).sum())

    def dense(self, metric: str = 'flops') -> int:
        """Cost of the unpruned model."""
        return self.cost(self.dense_widths, metric)
