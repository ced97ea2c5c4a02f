"""Unstructured weight masks: which weights are prunable, and how masks are enforced.

N:M masks (``'2:4'``: at most 2 of every 4 consecutive weights kept) are unstructured masks
with a layout rule (:mod:`.nm_layout`); :func:`~mmrecprune.sparsity.nm_magnitude_masks`
computes them.

A mask set is a ``dict[str, torch.BoolTensor]`` keyed by parameter name, each mask with the
shape of its weight; ``True`` keeps a weight, ``False`` prunes it. Parameters are passed around
as ``dict[str, Tensor]`` in the same key order (what :func:`prunable_parameters` returns).

Plain PyTorch: nothing here knows about runners, hooks or optimizer wrappers (the one hook is
PyTorch's own optimizer step post-hook, see :meth:`WeightMasks.apply_after_optimizer_steps`).

Where each part lives: this module selects the prunable weights and makes, rewinds and
randomises masks; :mod:`.mask_enforcement` checks and applies them (zeros, fill values, the
bitwise hot path), :mod:`.weight_masks` holds them around optimizer steps
(:class:`WeightMasks`), :mod:`.mask_packing` stores them as bits.
"""
from fnmatch import fnmatchcase

import torch
from torch import nn

from .mask_enforcement import (apply_masks, check_masks, fill_pruned_, keep_bits, zero_pruned_,
                               zero_pruned_bits_)
from .mask_packing import pack_mask, unpack_mask
from .nm_layout import nm_groups, nm_ungroup, parse_nm_pattern
from .weight_masks import WeightMasks

__all__ = ['DEFAULT_EXCLUDE', 'name_matches', 'prunable_parameters', 'init_masks', 'rewind',
           'random_masks_like', 'check_masks', 'apply_masks', 'fill_pruned_', 'zero_pruned_',
           'keep_bits', 'zero_pruned_bits_', 'pack_mask', 'unpack_mask', 'WeightMasks']

#: Default exclusion: the stem of an MMDetection / MMSegmentation ResNet (``conv1`` for the plain
#: stem, ``stem`` for ``deep_stem=True``), wherever the backbone sits (see :func:`name_matches`).
DEFAULT_EXCLUDE = ('conv1.*', 'stem.*')


def name_matches(name, patterns, anchor='backbone'):
    """Whether a dotted parameter name matches any of ``patterns``.

    The rule used for every include / exclude pattern in this package: a pattern (``fnmatch``
    syntax, case-sensitive, ``*`` also matches dots) matches a name if it matches

    * the full name, e.g. ``backbone.conv1.*`` matches ``backbone.conv1.weight``; or
    * the name relative to any ``anchor`` component on its path, e.g. ``conv1.*`` matches both
      ``conv1.weight`` (a bare ResNet) and ``backbone.conv1.weight`` /
      ``model.backbone.conv1.weight`` (a backbone inside a classifier or detector).

    Patterns are anchored at the start: ``conv1.*`` does not match ``layer1.0.conv1.weight``.

    Args:
        name (str): Dotted parameter name as given by ``named_parameters()``.
        patterns (Sequence[str]): ``fnmatch`` patterns.
        anchor (str | None): Module name that patterns may also be written relative to.
            Defaults to ``'backbone'``, the OpenMMLab attribute name. ``None`` matches full
            names only.
    """
    candidates = [name]
    if anchor:
        parts = name.split('.')
        candidates += ['.'.join(parts[i + 1:]) for i, part in enumerate(parts[:-1])
                       if part == anchor]
    return any(fnmatchcase(c, p) for p in patterns for c in candidates)


def prunable_parameters(model, include=('*',), exclude=DEFAULT_EXCLUDE,
                        module_types=(nn.Conv2d,)):
    """Select the weights that unstructured pruning may touch.

    Only the ``weight`` of modules that are instances of ``module_types`` is considered, so
    biases, fully-connected and normalisation layers are never selected with the default
    ``module_types``. Among those, a weight is selected if its name matches a pattern of
    ``include`` and none of ``exclude`` (matching rule: :func:`name_matches`).

    With the defaults, a bare ResNet gives all convs except the stem. For a classifier whose
    backbone lives under ``backbone.`` the default exclusion still removes the stem
    (``conv1.*`` also matches ``backbone.conv1.weight``), but ``include='*'`` would also select
    the convs of a decoder or any other head: restrict it with ``include=('backbone.*',)``.
    Full-name patterns such as ``backbone.conv1.*`` or ``backbone.layer4.*`` work as well.

    Args:
        model (nn.Module): The model.
        include (Sequence[str]): Patterns of weights to select. Defaults to ``('*',)``.
        exclude (Sequence[str]): Patterns of weights to leave out, applied after ``include``.
            Defaults to :data:`DEFAULT_EXCLUDE` (``('conv1.*', 'stem.*')``, the ResNet stem).
        module_types (tuple[type]): Module classes whose ``weight`` may be pruned (subclasses
            included). Defaults to ``(nn.Conv2d,)``.

    Returns:
        dict[str, nn.Parameter]: Selected weights by parameter name, in module order.
    """
    if isinstance(include, str):
        include = (include,)
    if isinstance(exclude, str):
        exclude = (exclude,)
    params = {}
    for module_name, module in model.named_modules():
        if not isinstance(module, module_types):
            continue
        weight = getattr(module, 'weight', None)
        if not isinstance(weight, nn.Parameter):
            continue
        name = f'{module_name}.weight' if module_name else 'weight'
        if name_matches(name, include) and not name_matches(name, exclude):
            params[name] = weight
    return params


def init_masks(params):
    """All-``True`` masks, one per parameter, on the parameter's device."""
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in params.items()}


@torch.no_grad()
def rewind(params, reference, masks):
    """Copy ``reference`` values into the surviving weights; pruned weights stay zero.

    Args:
        params (dict[str, Tensor]): Weights to rewind, modified in place.
        reference (dict[str, Tensor]): Values to rewind to (e.g. the pretrained weights), with
            an entry of the same shape for every name in ``params``.
        masks (dict[str, BoolTensor]): Masks by name, keys and shapes of ``params``.
    """
    check_masks(params, masks)
    for name, p in params.items():
        if name not in reference:
            raise ValueError(f'no reference value for {name!r} to rewind to')
        ref = reference[name]
        if ref.shape != p.shape:
            raise ValueError(f'reference for {name!r} has shape {tuple(ref.shape)}, but the '
                             f'parameter has shape {tuple(p.shape)}')
        p.copy_(ref)
    apply_masks(params, masks)


def random_masks_like(masks, seed, pattern=None):
    """Masks with the same number of kept entries per tensor as ``masks``, at random positions
    (seeded): the random-mask control of a ticket. With an N:M ``pattern`` (masks that satisfy
    it), the kept entries of every group are drawn at random instead, so the control is N:M
    too (the dense tail stays dense)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    if pattern is not None:
        n, m = parse_nm_pattern(pattern)
        for name, mask in masks.items():
            groups, tail = nm_groups(mask.cpu(), m)
            kept = groups.sum(dim=1, keepdim=True)
            ranks = torch.rand(groups.shape, generator=generator).argsort(dim=1).argsort(dim=1)
            new = nm_ungroup(ranks < kept, tail, mask.shape)
            out[name] = new.to(mask.device)
        return out
    for name, mask in masks.items():
        kept = int(mask.sum())
        order = torch.randperm(mask.numel(), generator=generator)
        new = torch.zeros(mask.numel(), dtype=torch.bool)
        new[order[:kept]] = True
        out[name] = new.view(mask.shape).to(mask.device)
    return out
