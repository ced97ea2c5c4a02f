"""Physical slimming: remove pruned channels from conv / BN / linear layers.

Layers are reshaped in place (the module objects, their names and their other settings stay, so
``state_dict`` keys match the source backbone and stride, padding, dilation, bias flags, BN
eps / momentum, SyncBN process groups are kept). Every ``nn.Parameter`` object stays too (only its
data, and its gradient, are replaced), so an optimizer built on the model keeps serving it: pass
the optimizer as ``optimizers=`` and its per-parameter state (SGD momentum, Adam moments, ...)
is sliced along, which is how a model is slimmed *during* training
(:meth:`~.soft_channel_masks.SoftChannelMasks.slim`). :func:`expand_channels` is the inverse:
a slim model back at dense widths, zeros in the removed channels. The result is described by a
*channel structure*:
a plain JSON-able ``{module_name: {"in": int, "out": int}}`` of the changed layers, small enough
for a weights-only ticket. :func:`apply_channel_structure` gives a freshly built dense model that
structure, after which the slim ``state_dict`` loads with ``strict=True``.

Note: an optimizer built before slimming stays valid only if it was passed as ``optimizers=``
(its state then has the new shapes); learning rates, weight-decay groups and the schedulers that
edit them are untouched.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from .channel_groups import CHANNEL_PARAMS, CONSUMER_KINDS, PRODUCER_KINDS, ChannelGroup


def _is_depthwise(conv: _ConvNd) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _set_sizes(module: nn.Module, n_in: int, n_out: int) -> None:
    """Update the size attributes a layer's ``forward`` / ``extra_repr`` rely on."""
    if isinstance(module, _ConvNd):
        if _is_depthwise(module):
            module.groups = n_in
        module.in_channels, module.out_channels = n_in, n_out
    elif isinstance(module, _BatchNorm):
        module.num_features = n_out
    elif isinstance(module, nn.Linear):
        module.in_features, module.out_features = n_in, n_out


def channel_sizes(module: nn.Module) -> dict[str, int]:
    """``{"in": ..., "out": ...}`` of a conv, BN (both = ``num_features``) or linear layer."""
    if isinstance(module, _ConvNd):
        return {'in': module.in_channels, 'out': module.out_channels}
    if isinstance(module, _BatchNorm):
        return {'in': module.num_features, 'out': module.num_features}
    if isinstance(module, nn.Linear):
        return {'in': module.in_features, 'out': module.out_features}
    raise TypeError(f'channel structure only covers Conv, BatchNorm and Linear layers, '
                    f'not {type(module).__name__}')


def slice_optimizer_state_(optimizers, param: nn.Parameter, dim: int, index: torch.Tensor,
                           shape: torch.Size) -> None:
    """Keep only ``index`` along ``dim`` of every state tensor of ``param`` shaped like the
    parameter was (``shape``): SGD's momentum buffer, Adam's moments, RMSprop's averages.
    Scalars (Adam's ``step``) are left as they are."""
    for optimizer in optimizers:
        state = optimizer.state.get(param)
        if not state:
            continue
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape == shape:
                state[key] = value.index_select(dim, index.to(value.device))


def _take(module: nn.Module, attr: str, dim: int, index: torch.Tensor, optimizers=()) -> None:
    """Keep only ``index`` along ``dim`` of a parameter (with its grad and optimizer state, the
    ``nn.Parameter`` object kept) or buffer."""
    t = getattr(module, attr, None)
    if t is None:
        return
    index = index.to(t.device)
    new = t.detach().index_select(dim, index)
    if t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(
            memory_format=torch.channels_last):
        new = new.contiguous(memory_format=torch.channels_last)
    if isinstance(t, nn.Parameter):
        grad, t.grad = t.grad, None
        slice_optimizer_state_(optimizers, t, dim, index, t.shape)
        t.data = new
        if grad is not None:
            t.grad = grad.index_select(dim, index)
    else:
        setattr(module, attr, new)


def slim_model(model: nn.Module, groups: list[ChannelGroup],
               masks: Mapping[str, torch.Tensor], optimizers=()) -> dict[str, dict[str, int]]:
    """Remove the channels each group's mask drops, in place.

    Exact when the model was soft-pruned first with :func:`~.channel_masks.apply_channel_masks`
    (the removed channels are then zero everywhere they flow). Parameters keep their identity.

    Args:
        model (nn.Module): The dense (or previously slimmed) model the groups were found on.
        groups (list[ChannelGroup]): Its groups.
        masks (Mapping[str, Tensor]): Bool keep-mask per group name; missing groups are kept.
        optimizers (Sequence[torch.optim.Optimizer]): Optimizers built on ``model`` whose
            per-parameter state is sliced along (see :func:`slice_optimizer_state_`).

    Returns:
        dict[str, dict[str, int]]: Channel structure of the layers changed by this call, with
        their final sizes. Across repeated slims, merge with ``dict.update``.

    Raises:
        ValueError: If a mask has the wrong length or keeps no channel.
    """
    modules = dict(model.named_modules())
    changed = set()
    for g in groups:
        if g.name not in masks:
            continue
        mask = masks[g.name].bool().flatten()
        if mask.numel() != g.num_channels:
            raise ValueError(f'mask for group {g.name!r} has {mask.numel()} entries, the group '
                             f'has {g.num_channels} channels')
        if not mask.any():
            raise ValueError(f'mask for group {g.name!r} keeps no channel')
        if mask.all():
            continue
        index = mask.nonzero().flatten()
        for name, kind in g.members:
            module = modules[name]
            for attr, dim in CHANNEL_PARAMS[kind]:
                _take(module, attr, dim, index, optimizers)
            sizes = channel_sizes(module)
            n = len(index)
            if kind in CONSUMER_KINDS:
                _set_sizes(module, n, sizes['out'])
            elif kind in PRODUCER_KINDS:
                _set_sizes(module, sizes['in'], n)
            else:  # bn, dwconv: one axis in and out
                _set_sizes(module, n, n)
            changed.add(name)
    return {name: channel_sizes(m) for name, m in modules.items() if name in changed}


def apply_channel_structure(model: nn.Module, structure: Mapping[str, Mapping[str, int]]) -> None:
    """Reshape a freshly built dense model to a channel structure, in place.

    The reshaped layers are re-initialised with their own ``reset_parameters`` (so the model is
    usable for training from scratch); load the slim ``state_dict`` afterwards for the real
    weights. A depthwise conv of the dense model stays depthwise (``groups`` follows the width).

    Args:
        model (nn.Module): A dense model of the architecture the structure was taken from.
        structure (Mapping[str, Mapping[str, int]]): From :func:`slim_model`.

    Raises:
        ValueError: If a name is not a conv / BN / linear layer of ``model`` or sizes are invalid.
    """
    modules = dict(model.named_modules())
    for name, sizes in structure.items():
        module = modules.get(name)
        if module is None:
            raise ValueError(f'channel structure names {name!r}, which the model does not have')
        try:
            old = channel_sizes(module)
        except TypeError as e:
            raise ValueError(f'channel structure entry {name!r}: {e}') from None
        n_in, n_out = int(sizes['in']), int(sizes['out'])
        if n_in < 1 or n_out < 1:
            raise ValueError(f'channel structure entry {name!r} has non-positive sizes {sizes}')
        if n_in > old['in'] or n_out > old['out']:  # a slim structure never grows a layer
            raise ValueError(f'channel structure entry {name!r}: sizes {sizes} exceed the dense '
                             f'layer {old}')
        if isinstance(module, _ConvNd):
            groups = n_in if _is_depthwise(module) else module.groups
            if (_is_depthwise(module) and n_in != n_out) or n_in % groups or n_out % groups:
                raise ValueError(f'channel structure entry {name!r}: sizes {sizes} do not fit a '
                                 f'conv with groups={module.groups} (dense {old})')
        elif isinstance(module, _BatchNorm) and n_in != n_out:
            raise ValueError(f'channel structure entry {name!r}: a BatchNorm needs in == out')
        _set_sizes(module, n_in, n_out)
        _reshape_tensors(module)


def _reshape_tensors(module: nn.Module) -> None:
    """Give a layer fresh tensors matching its size attributes, then re-initialise them."""
    if isinstance(module, _ConvNd):
        shape = (module.out_channels, module.in_channels // module.groups, *module.kernel_size)
        if module.transposed:
            shape = (module.in_channels, module.out_channels // module.groups, *module.kernel_size)
        sizes = {'weight': shape, 'bias': (module.out_channels, )}
    elif isinstance(module, _BatchNorm):
        n = module.num_features
        sizes = {'weight': (n, ), 'bias': (n, ), 'running_mean': (n, ), 'running_var': (n, )}
    else:
        sizes = {'weight': (module.out_features, module.in_features),
                 'bias': (module.out_features, )}
    for attr, shape in sizes.items():
        t = getattr(module, attr, None)
        if t is None:
            continue
        new = torch.empty(shape, dtype=t.dtype, device=t.device)
        if isinstance(t, nn.Parameter):
            setattr(module, attr, nn.Parameter(new, requires_grad=t.requires_grad))
        else:
            setattr(module, attr, new)
    if hasattr(module, 'reset_parameters'):
        module.reset_parameters()


@torch.no_grad()
def expand_channels(model: nn.Module, groups: list[ChannelGroup],
                    present: Mapping[str, torch.Tensor]) -> None:
    """The inverse of :func:`slim_model`, in place: give every group its dense width again.

    ``present[g]`` lists the dense channel indices the slim layers hold (in order); the others
    come back as zeros (BN ``running_var`` as ones), so the model computes what the slim one
    computes. Used to measure and export a model slimmed during training against its dense
    architecture. Parameters keep their identity; gradients are dropped.

    Args:
        model (nn.Module): The slim model.
        groups (list[ChannelGroup]): Its groups as traced on the dense model (dense widths).
        present (Mapping[str, Tensor]): Dense indices held, per slimmed group name.
    """
    modules = dict(model.named_modules())
    for g in groups:
        if g.name not in present:
            continue
        index = present[g.name].long().flatten()
        for name, kind in g.members:
            module = modules[name]
            for attr, dim in CHANNEL_PARAMS[kind]:
                t = getattr(module, attr, None)
                if t is None:
                    continue
                shape = list(t.shape)
                shape[dim] = g.num_channels
                new = (torch.ones if attr == 'running_var' else torch.zeros)(
                    shape, dtype=t.dtype, device=t.device)
                new.index_copy_(dim, index.to(t.device), t.detach())
                if isinstance(t, nn.Parameter):
                    t.grad = None
                    t.data = new
                else:
                    setattr(module, attr, new)
            sizes = channel_sizes(module)
            n = g.num_channels
            if kind in CONSUMER_KINDS:
                _set_sizes(module, n, sizes['out'])
            elif kind in PRODUCER_KINDS:
                _set_sizes(module, sizes['in'], n)
            else:
                _set_sizes(module, n, n)
