"""How a channel is cut during training: soft masks with backups, restore and re-zeroing.

Soft pruning zeroes a pruned channel's filter, bias and BN affine entries (the one zeroing rule,
:func:`~.channel_masks.channel_zero_targets`) but keeps every shape, so the channel can be
restored from the backup taken when it was pruned, an optimizer built on the model stays valid,
and :func:`~.slimming.slim_model` removes the channels only at export.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from .channel_groups import CHANNEL_PARAMS, FILTER_KINDS, ChannelGroup
from .channel_masks import channel_zero_targets, zero_channel_targets_

# member kinds whose tensors soft pruning zeroes (and restoration brings back)
ZEROED_KINDS = FILTER_KINDS + ('bn', )


class SoftChannelMasks:
    """Keep-masks of channel groups applied to a dense model, with backups for restoration.

    Args:
        model (nn.Module): The model the groups were traced on.
        groups (list[ChannelGroup]): The prunable groups.
    """

    def __init__(self, model: nn.Module, groups: Sequence[ChannelGroup]) -> None:
        self.model = model
        self.groups = list(groups)
        self.modules = dict(model.named_modules())
        device = self.device
        self.masks = {g.name: torch.ones(g.num_channels, dtype=torch.bool, device=device)
                      for g in self.groups}
        self._backups = {}
        self._zero_targets = []

    @property
    def device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device('cpu')

    def tensors(self, g: ChannelGroup):
        """(key, module, attr, dim) of every tensor soft pruning zeroes or backs up."""
        for name, kind in g.members:
            if kind not in ZEROED_KINDS:
                continue
            module = self.modules[name]
            for attr, dim in CHANNEL_PARAMS[kind]:
                if getattr(module, attr, None) is not None:
                    yield f'{name}.{attr}', module, attr, dim

    def backup_weights(self, g: ChannelGroup) -> dict:
        """``{member name: backed-up weight}`` of a group's filter members (values of pruned
        channels at the time they were pruned; other entries are zero)."""
        out = {}
        for name, kind in g.members:
            if kind in FILTER_KINDS:
                attr = CHANNEL_PARAMS[kind][0][0]
                key = f'{name}.{attr}'
                if key in self._backups:
                    out[name] = self._backups[key]
        return out

    @torch.no_grad()
    def _backup(self, g, channels):
        idx = channels.nonzero().flatten()
        for key, module, attr, dim in self.tensors(g):
            t = getattr(module, attr)
            if key not in self._backups:
                self._backups[key] = torch.zeros_like(t, memory_format=torch.contiguous_format)
            self._backups[key].index_copy_(dim, idx, t.detach().index_select(dim, idx))

    @torch.no_grad()
    def _restore(self, g, channels):
        idx = channels.nonzero().flatten()
        for key, module, attr, dim in self.tensors(g):
            getattr(module, attr).index_copy_(dim, idx, self._backups[key].index_select(dim, idx))

    @torch.no_grad()
    def update(self, masks: Mapping[str, torch.Tensor]) -> dict:
        """Move to new ``masks``: back up newly pruned channels, restore returning ones from
        their backups, zero the pruned ones. Returns ``{group: channels pruned or restored}``."""
        changed = {}
        for g in self.groups:
            old, new = self.masks[g.name], masks[g.name].to(self.masks[g.name].device)
            newly, back = old & ~new, ~old & new
            if newly.any():
                self._backup(g, newly)
            if back.any():
                self._restore(g, back)
            if (newly | back).any():
                changed[g.name] = newly | back
        self.masks = {n: m.to(self.device).clone() for n, m in masks.items()}
        self.apply()
        return changed

    def apply(self) -> None:
        """Zero every pruned channel and cache what to zero after each optimizer step."""
        self._zero_targets = channel_zero_targets(self.modules, self.groups, self.masks)
        zero_channel_targets_(self._zero_targets)

    def reapply(self) -> None:
        """Re-zero the pruned channels (after an optimizer step): one ``index_fill_`` each."""
        zero_channel_targets_(self._zero_targets)

    def param_slices(self, channels: Mapping[str, torch.Tensor]) -> list:
        """``(parameter, dim, index)`` of the filter / BN parameters of the given channels, e.g.
        to clear their optimizer state after a step changed them."""
        out = []
        for g in self.groups:
            if g.name not in channels:
                continue
            idx = channels[g.name].nonzero().flatten()
            for _, module, attr, dim in self.tensors(g):
                t = getattr(module, attr)
                if isinstance(t, nn.Parameter):
                    out.append((t, dim, idx.to(t.device)))
        return out

    def state_dict(self) -> dict:
        """Masks and the backups of the pruned channels (only their slices)."""
        backups = {}
        for g in self.groups:
            idx = (~self.masks[g.name]).nonzero().flatten()
            if idx.numel() == 0:
                continue
            for key, _, _, dim in self.tensors(g):
                backups[key] = self._backups[key].index_select(dim, idx).cpu()
        return dict(masks={n: m.cpu().clone() for n, m in self.masks.items()}, backups=backups)

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict` output (the weights themselves come from elsewhere)."""
        device = self.device
        self.masks = {g.name: state['masks'][g.name].to(device).bool() for g in self.groups}
        self._backups = {}
        for g in self.groups:
            idx = (~self.masks[g.name]).nonzero().flatten()
            if idx.numel() == 0:
                continue
            for key, module, attr, dim in self.tensors(g):
                t = getattr(module, attr)
                self._backups[key] = torch.zeros_like(t, memory_format=torch.contiguous_format)
                self._backups[key].index_copy_(dim, idx, state['backups'][key].to(t))
        self.apply()
