"""How a channel is cut during training: soft masks with backups, restore and re-zeroing.

Soft pruning zeroes a pruned channel's filter, bias and BN affine entries (the one zeroing rule,
:func:`~.channel_masks.channel_zero_targets`) but keeps every shape, so the channel can be
restored from the backup taken when it was pruned, an optimizer built on the model stays valid,
and :func:`~.slimming.slim_model` removes the channels only at export.

Slimming during training: once a pruned channel can no longer come back (its pruner will never
restore it), :meth:`SoftChannelMasks.slim` removes it from the model being trained, in place,
slicing the optimizers' state and any copies of the model (an EMA) along. Masks, backups and
gradient statistics stay indexed by the *dense* channels of each group; :attr:`present` records
which dense channels a slimmed group still holds, and every access to the model's tensors goes
through it (:meth:`SoftChannelMasks.physical_index`).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import torch
from torch import nn

from .channel_groups import CHANNEL_PARAMS, FILTER_KINDS, ChannelGroup
from .channel_masks import channel_zero_targets, zero_channel_targets_
from .slimming import channel_sizes, expand_channels, slim_model
from .state_checks import (check_bool_masks, check_channel_indices, check_keys, check_tensor,
                           refuse)

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
        #: ``{group name: dense channel indices the model still holds}``, slimmed groups only
        self.present = {}
        self._positions = {}
        members = {name for g in self.groups for name, _ in g.members}
        self.dense_sizes = {name: channel_sizes(self.modules[name]) for name in members}

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

    # ---- dense channels <-> the model's tensors ---------------------------------------------
    def physical_index(self, g: ChannelGroup, channels: torch.Tensor) -> torch.Tensor:
        """Where the dense channels ``channels`` (bool mask or indices) of ``g`` sit in the
        model's tensors (LongTensor); RuntimeError if one was slimmed away."""
        idx = channels.nonzero().flatten() if channels.dtype == torch.bool else channels.long()
        positions = self._positions.get(g.name)
        if positions is None:
            return idx
        out = positions.to(idx.device)[idx]
        if (out < 0).any():
            raise RuntimeError(f'group {g.name!r}: channels {idx[out < 0].tolist()[:8]} were '
                               'removed from the model (slimmed during training) and cannot '
                               'come back')
        return out

    def width(self, g: ChannelGroup) -> int:
        """Channels of ``g`` the model holds now."""
        return len(self.present[g.name]) if g.name in self.present else g.num_channels

    def physical_groups(self) -> list:
        """The groups at the widths the model holds now (the dense ones if never slimmed)."""
        return [dataclasses.replace(g, num_channels=self.width(g)) if g.name in self.present
                else g for g in self.groups]

    def physical_masks(self, masks: Mapping[str, torch.Tensor] | None = None) -> dict:
        """Dense keep-masks cut to the channels the model holds (group order)."""
        masks = self.masks if masks is None else masks
        return {g.name: masks[g.name][self.present[g.name].to(masks[g.name].device)]
                if g.name in self.present else masks[g.name] for g in self.groups}

    def to_dense(self, g: ChannelGroup, scores: torch.Tensor, fill: float = 0.0):
        """Per-channel values of the model's tensors (e.g. importance scores) at dense indices,
        ``fill`` where the channel was slimmed away. Values that already have the dense length
        (criteria that score a group by its name, such as ``Random``) pass unchanged."""
        if g.name not in self.present or scores.numel() == g.num_channels:
            return scores
        out = scores.new_full((g.num_channels, ), fill)
        out[self.present[g.name].to(scores.device)] = scores
        return out

    @torch.no_grad()
    def _backup(self, g, channels):
        idx = self.physical_index(g, channels)
        for key, module, attr, dim in self.tensors(g):
            t = getattr(module, attr)
            if key not in self._backups:
                self._backups[key] = torch.zeros_like(t, memory_format=torch.contiguous_format)
            self._backups[key].index_copy_(dim, idx, t.detach().index_select(dim, idx))

    @torch.no_grad()
    def _restore(self, g, channels):
        idx = self.physical_index(g, channels)
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
        self._zero_targets = channel_zero_targets(self.modules, self.physical_groups(),
                                                  self.physical_masks())
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
            held = channels[g.name].clone()
            if g.name in self.present:
                held &= self.present_mask(g).to(held.device)
            idx = self.physical_index(g, held)
            for _, module, attr, dim in self.tensors(g):
                t = getattr(module, attr)
                if isinstance(t, nn.Parameter):
                    out.append((t, dim, idx.to(t.device)))
        return out

    def present_mask(self, g: ChannelGroup) -> torch.Tensor:
        """Bool mask of the dense channels of ``g`` the model holds."""
        if g.name not in self.present:
            return torch.ones(g.num_channels, dtype=torch.bool)
        mask = torch.zeros(g.num_channels, dtype=torch.bool)
        mask[self.present[g.name]] = True
        return mask

    def _held_pruned(self, g):
        """Physical indices of the pruned channels the model still holds (those with backups)."""
        pruned = ~self.masks[g.name]
        if g.name in self.present:
            pruned &= self.present_mask(g).to(pruned.device)
        return self.physical_index(g, pruned)

    # ---- slimming during training --------------------------------------------------------------
    @torch.no_grad()
    def slim(self, optimizers=(), copies=()) -> dict:
        """Remove every pruned channel from the model, in place: call it only when they can no
        longer be restored. Parameter objects stay, their gradients and the per-parameter state
        of ``optimizers`` are sliced along, and so is every model in ``copies`` (same module
        names and widths as the model, e.g. an EMA copy). Their backups are dropped.

        Returns:
            dict[str, int]: ``{group name: channels removed}`` for the groups this call slimmed.
        """
        groups = self.physical_groups()
        keep = self.physical_masks()
        cut = {g.name: keep[g.name] for g in groups if not keep[g.name].all()}
        if not cut:
            return {}
        slim_model(self.model, groups, cut, optimizers)
        for other in copies:
            slim_model(other, groups, cut)
        removed = {}
        for g in self.groups:
            if g.name not in cut:
                continue
            held = self.present.get(g.name, torch.arange(g.num_channels))
            self.present[g.name] = held[cut[g.name].cpu()].clone()
            removed[g.name] = int((~cut[g.name]).sum())
            for key, *_ in self.tensors(g):
                self._backups.pop(key, None)
        self._update_positions()
        self.apply()
        return removed

    def _update_positions(self):
        self._positions = {}
        for g in self.groups:
            if g.name in self.present:
                positions = torch.full((g.num_channels, ), -1, dtype=torch.long)
                positions[self.present[g.name]] = torch.arange(len(self.present[g.name]))
                self._positions[g.name] = positions

    def slim_like(self, model: nn.Module) -> None:
        """Give ``model`` (a dense model with this one's module names, e.g. a freshly built
        copy) the channels the slimmed model holds, in place (its values are kept, not loaded)."""
        if self.present:
            slim_model(model, self.groups, {g.name: self.present_mask(g) for g in self.groups
                                            if g.name in self.present})

    def expand_like(self, model: nn.Module) -> None:
        """Give a slimmed ``model`` (or a copy of it) its dense widths back, zeros in the
        channels slimmed away (:func:`~.slimming.expand_channels`)."""
        expand_channels(model, self.groups, self.present)

    def structure(self, model: nn.Module | None = None) -> dict:
        """Channel structure (see :mod:`.slimming`) of ``model`` (default: the slimmed model)
        against the dense model: the members whose sizes changed, in module order."""
        model = self.model if model is None else model
        out = {}
        for name, module in model.named_modules():
            if name in self.dense_sizes and channel_sizes(module) != self.dense_sizes[name]:
                out[name] = channel_sizes(module)
        return out

    # ---- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Masks, the dense channels each slimmed group holds (``present``) and the backups of
        the pruned channels the model holds (only their slices)."""
        backups = {}
        for g in self.groups:
            idx = self._held_pruned(g)
            if idx.numel() == 0:
                continue
            for key, _, _, dim in self.tensors(g):
                backups[key] = self._backups[key].index_select(dim, idx).cpu()
        return dict(masks={n: m.cpu().clone() for n, m in self.masks.items()}, backups=backups,
                    present={n: p.cpu().clone() for n, p in self.present.items()})

    def check_state(self, state, owner: str = 'SoftChannelMasks') -> None:
        """Refuse (:class:`~.state_checks.PrunerStateError`) a :meth:`state_dict` output that
        does not fit these groups and the model: bool masks of every group's width,
        ``present`` of slimmed groups as sorted channel indices (the model's own where it is
        slimmed already) and backups of the live tensors' dtypes at the shapes the model will
        have, for exactly the pruned channels it will hold. Changes nothing."""
        # (a pruner passes its whole state, whose other keys it checks itself)
        check_keys(state, owner, ('masks', 'backups'),
                   state.keys() if isinstance(state, Mapping) else (), 'state')
        widths = {g.name: g.num_channels for g in self.groups}
        masks = check_bool_masks(state['masks'], owner, 'masks', widths)
        present = state.get('present') or {}
        check_keys(present, owner, (), widths, 'present')
        for name, held in present.items():
            check_channel_indices(held, owner, f'present[{name!r}]', widths[name])
            if name in self.present and not torch.equal(self.present[name], held):
                raise refuse(owner, f'present[{name!r}]', 'names other channels than the '
                             'model holds (it was slimmed already)')
            gone = torch.ones(widths[name], dtype=torch.bool)
            gone[held] = False
            if bool(masks[name][gone.to(masks[name].device)].any()):
                raise refuse(owner, f'masks[{name!r}]', 'keeps channels that present says '
                             'were slimmed away')
        for name in self.present:
            if name not in present:
                raise refuse(owner, 'present', f'lacks group {name!r}, which the model holds '
                             'slimmed')
        # the shapes the model's tensors will have once slimmed to `present`
        shapes = {key: list(getattr(m, attr).shape)
                  for g in self.groups for key, m, attr, _ in self.tensors(g)}
        for g in self.groups:
            if g.name in present and g.name not in self.present:
                for name, kind in g.members:
                    for attr, dim in CHANNEL_PARAMS[kind]:
                        if f'{name}.{attr}' in shapes:
                            shapes[f'{name}.{attr}'][dim] = len(present[g.name])
        expected = {}
        for g in self.groups:
            pruned = ~masks[g.name]
            if g.name in present:
                pruned = pruned[present[g.name]]
            count = int(pruned.sum())
            for key, module, attr, dim in self.tensors(g) if count else ():
                shape = list(shapes[key])
                shape[dim] = count
                expected[key] = (getattr(module, attr).dtype, shape)
        backups = check_keys(state['backups'], owner, expected, (), 'backups')
        for key, (dtype, shape) in expected.items():
            check_tensor(backups[key], owner, f'backups[{key!r}]', dtype, shape)

    def load_state_dict(self, state: Mapping, copies=()) -> None:
        """Restore :meth:`state_dict` output (the weights themselves come from elsewhere).

        A state with slimmed groups (``present``) first slims the model (and ``copies``) to the
        same channels, so the saved slim weights load into it next; a model that already holds
        them stays as it is."""
        self.check_state(state)
        device = self.device
        self.masks = {g.name: state['masks'][g.name].to(device).bool() for g in self.groups}
        present = {n: p.long().cpu() for n, p in (state.get('present') or {}).items()}
        cut = {}
        for g in self.groups:
            if g.name not in present:
                if g.name in self.present:
                    raise ValueError(f'group {g.name!r} is slimmed in the model but not in the '
                                     'saved pruning state')
                continue
            if g.name in self.present:
                if not torch.equal(self.present[g.name], present[g.name]):
                    raise ValueError(f'group {g.name!r} holds other channels than the saved '
                                     'pruning state')
                continue
            mask = torch.zeros(g.num_channels, dtype=torch.bool)
            mask[present[g.name]] = True
            if not mask.any() or int(mask.sum()) != len(present[g.name]):
                raise ValueError(f'saved channels of group {g.name!r} are invalid')
            cut[g.name] = mask
        if cut:
            slim_model(self.model, self.groups, cut)
            for other in copies:
                slim_model(other, self.groups, cut)
            self.present.update({n: present[n] for n in cut})
            self._update_positions()
        self._backups = {}
        for g in self.groups:
            idx = self._held_pruned(g)
            if idx.numel() == 0:
                continue
            for key, module, attr, dim in self.tensors(g):
                t = getattr(module, attr)
                self._backups[key] = torch.zeros_like(t, memory_format=torch.contiguous_format)
                self._backups[key].index_copy_(dim, idx, state['backups'][key].to(t))
        self.apply()
