"""Channel (filter) masks: choose channels to keep, and soft-prune them in a dense model.

A channel mask is a bool tensor per :class:`ChannelGroup` (``True`` = keep), held in a dict keyed
by group name. Soft pruning zeroes the pruned channels' filters but keeps the layer shapes, so they
can still receive gradients and be restored; :func:`~.slimming.slim_model` later removes them.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .channel_groups import CHANNEL_PARAMS, CONSUMER_KINDS, ChannelGroup
from .cost_schedule import round_half_up, round_up_to


def _check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f'pruning ratio must be in [0, 1), got {ratio}')


def _top_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` highest scores; ties go to the lower index (deterministic)."""
    order = torch.argsort(scores, descending=True, stable=True)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[order[:k]] = True
    return mask


def global_channel_masks(importances: Mapping[str, torch.Tensor], ratio: float,
                         round_to: int = 1, min_keep: int = 1) -> dict[str, torch.Tensor]:
    """Drop the ``ratio`` least important channels ranked across all groups together.

    Each group's ``min_keep`` best channels are protected first (so no layer is emptied), then the
    lowest scores over all groups are dropped until ``round(ratio * total)`` are gone or only
    protected ones remain; finally each group's kept count is rounded up to ``round_to``.

    Args:
        importances (Mapping[str, Tensor]): Scores per group name.
        ratio (float): Fraction of all channels to drop, in ``[0, 1)``.
        round_to (int): Per-group kept count is a multiple of this (or the group size).
        min_keep (int): Channels every group keeps regardless of rank. Defaults to 1.

    Returns:
        dict[str, Tensor]: Keep-mask per group name (on the scores' devices).
    """
    _check_ratio(ratio)
    names = list(importances)
    if not names:
        return {}
    scores = [importances[n].detach().float().flatten().cpu() for n in names]
    sizes = [s.numel() for s in scores]
    flat = torch.cat(scores)
    protected = torch.cat([_top_mask(s, min(min_keep, s.numel())) for s in scores])
    n_prune = min(round_half_up(ratio * flat.numel()), int((~protected).sum()))
    order = torch.argsort(flat.masked_fill(protected, float('inf')), stable=True)
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[order[:n_prune]] = False
    masks = {}
    for name, s, mask in zip(names, scores, keep.split(sizes)):
        k = round_up_to(int(mask.sum()), round_to, s.numel())
        mask = _top_mask(s, k) if k > int(mask.sum()) else mask
        masks[name] = mask.to(importances[name].device)
    return masks


def channel_zero_targets(modules: Mapping[str, nn.Module], groups: list[ChannelGroup],
                         masks: Mapping[str, torch.Tensor]) -> list:
    """The one zeroing rule of soft pruning: ``(module, attr, dim, index)`` of every tensor
    slice a pruned channel sets to zero.

    A pruned channel's conv / depthwise / linear filter and bias and its BN ``weight`` *and*
    ``bias`` are zeroed (a BN with zero scale but non-zero shift would still emit a constant, so
    zeroing only filters is not enough). BN running statistics stay (with weight = bias = 0 the
    output is 0 anyway), except a non-affine BN's ``running_mean``, which would map an all-zero
    channel to ``-mean / std``. The channel's activation is then exactly 0 after BN, ReLU and
    any later depthwise conv, which makes :func:`~.slimming.slim_model` output-exact.
    Consumers' input weights are left alone so a restored channel gets its old fan-out back.
    """
    targets = []
    for g in groups:
        if g.name not in masks:
            continue
        mask = masks[g.name]
        if mask.numel() != g.num_channels:
            raise ValueError(f'mask for group {g.name!r} has {mask.numel()} entries, the group '
                             f'has {g.num_channels} channels')
        pruned = (~mask.bool()).nonzero().flatten()
        if pruned.numel() == 0:
            continue
        for name, kind in g.members:
            if kind in CONSUMER_KINDS:
                continue
            module = modules[name]
            affine = getattr(module, 'weight', None) is not None
            for attr, dim in CHANNEL_PARAMS[kind]:
                t = getattr(module, attr, None)
                if t is None or (attr.startswith('running_')
                                 and (affine or attr != 'running_mean')):
                    continue
                targets.append((module, attr, dim, pruned.to(t.device)))
    return targets


def apply_channel_masks(model: nn.Module, groups: list[ChannelGroup],
                        masks: Mapping[str, torch.Tensor]) -> None:
    """Soft-prune in place: zero the pruned channels' slices by :func:`channel_zero_targets`.

    Args:
        model (nn.Module): The dense model.
        groups (list[ChannelGroup]): Its groups.
        masks (Mapping[str, Tensor]): Bool keep-mask per group name; missing groups are skipped.
    """
    zero_channel_targets_(channel_zero_targets(dict(model.named_modules()), groups, masks))


@torch.no_grad()
def zero_channel_targets_(targets: list) -> None:
    """Zero the slices of :func:`channel_zero_targets` output: one ``index_fill_`` each."""
    for module, attr, dim, idx in targets:
        getattr(module, attr).index_fill_(dim, idx, 0)
