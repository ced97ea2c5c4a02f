"""Channel dependency groups: which layers share one channel axis and must be pruned together.

The groups are found by tracing one forward pass, not by module names, so any backbone
built from ``Conv*d`` / ``*BatchNorm*`` / ``Linear`` layers works (MMDetection / MMSegmentation
ResNets with or without ``deep_stem`` / ``avg_down``, MobileNetV2, plain ``nn.Sequential``):

* forward hooks on conv, BN and linear layers record which tensor each one consumes and produces;
* a ``TorchFunctionMode`` sees every other tensor operation. Operations that keep the channel axis
  (activations, pooling, interpolation, ``x + identity``, ``x * gate``) tie the channel axes of
  their inputs and outputs; operations that mix or reorder channels (``cat`` on dim 1, ``view`` that
  splits channels, softmax over channels, LayerNorm, GroupNorm, transposed convs, grouped convs)
  make the axes they touch unprunable.

A channel axis ("space") becomes a :class:`ChannelGroup` when at least one conv or linear layer
produces it and nothing unprunable touches it. Its ``kind`` says where it sits:

* ``'internal'``: inside one block, e.g. a Bottleneck's conv1 / conv2 outputs, a BasicBlock's conv1
  output, the expansion channels of an inverted residual (with its depthwise conv). Precisely:
  not tied by an addition, not a model output, and not the input or output of a *block*, where a
  block is any module whose class contains a residual addition in at least one instance (so a
  stride-2 InvertedResidual without shortcut is a block too). Pruning these leaves every block's
  output width unchanged.
* ``'residual'``: tied by element-wise additions, e.g. all block outputs of a ResNet stage
  together with the downsample conv, and the next convs' inputs. (Element-wise products such as
  squeeze-excitation gates tie axes too, but do not by themselves make an axis residual: an
  SE-gated expansion stays ``'internal'``.)
* ``'boundary'``: other axes between blocks, e.g. the stem output of ResNet-50 that feeds both
  ``layer1.0.conv1`` and its downsample conv.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .flops import COSTED_LAYERS, layer_call, shape_forward

# Which (parameter or buffer, dim) of a member module lies on the group's channel axis. The single
# table that importance, masking and slimming all read.
CHANNEL_PARAMS: dict[str, tuple[tuple[str, int], ...]] = {
    'conv_out': (('weight', 0), ('bias', 0)),
    'conv_in': (('weight', 1), ),
    'dwconv': (('weight', 0), ('bias', 0)),
    'bn': (('weight', 0), ('bias', 0), ('running_mean', 0), ('running_var', 0)),
    'linear_out': (('weight', 0), ('bias', 0)),
    'linear_in': (('weight', 1), ),
}
# Members whose weights compute the channel (a "filter"); the others only read it.
FILTER_KINDS = ('conv_out', 'dwconv', 'linear_out')
PRODUCER_KINDS = ('conv_out', 'linear_out')
#: the members that read a group's channels as their input channels
CONSUMER_KINDS = ('conv_in', 'linear_in')
_KIND_ORDER = {k: i for i, k in enumerate(CHANNEL_PARAMS)}


@dataclass
class ChannelGroup:
    """Layers that share one channel axis and so are pruned together.

    Args:
        name (str): Unique name: the first producing layer in module order.
        members (list[tuple[str, str]]): ``(module_name, kind)`` pairs, ``kind`` one of
            ``'conv_out'``, ``'conv_in'``, ``'dwconv'`` (depthwise conv: in and out), ``'bn'``,
            ``'linear_out'``, ``'linear_in'`` (see ``CHANNEL_PARAMS``).
        num_channels (int): Width of the channel axis.
        kind (str): ``'internal'``, ``'residual'`` or ``'boundary'`` (see the module docstring).
        outputs (tuple[int, ...]): Indices of the model outputs (flattened in order) that carry this
            axis, e.g. the stage indices of a backbone's ``out_indices``.
    """
    name: str
    members: list[tuple[str, str]]
    num_channels: int
    kind: str = 'internal'
    outputs: tuple[int, ...] = ()


@dataclass
class _Space:
    size: int
    members: list = field(default_factory=list)
    blocked: bool = False     # touched by something we cannot slice
    merged: bool = False      # tied to another axis by an addition (residual) or shared layer
    boundary: bool = False    # enters or leaves a block (see the module docstring)
    outputs: set = field(default_factory=set)

    def absorb(self, other: '_Space') -> None:
        self.blocked |= other.blocked or other.size != self.size
        self.merged |= other.merged
        self.boundary |= other.boundary
        self.members += other.members
        self.outputs |= other.outputs


# Functions that mix or reorder channels: their channel inputs become unprunable.
_MIXING = {
    'conv1d', 'conv2d', 'conv3d', 'conv_transpose1d', 'conv_transpose2d', 'conv_transpose3d',
    'linear', 'bilinear', 'matmul', 'mm', 'bmm', 'baddbmm', 'addmm', 'einsum',
    'tensordot', 'layer_norm', 'group_norm', 'batch_norm', 'instance_norm', 'normalize',
    'local_response_norm', 'pixel_shuffle', 'pixel_unshuffle', 'channel_shuffle',
    'native_channel_shuffle', 'gather', 'index_select', 'scatter', 'embedding', 'unfold', 'fold',
    'movedim', 'moveaxis', 't', 'adjoint',
}
# Functions whose ``dim`` argument decides whether channels are mixed.
_DIM_OPS = {
    'sum', 'mean', 'amax', 'amin', 'max', 'min', 'prod', 'std', 'var', 'norm', 'logsumexp',
    'argmax', 'argmin', 'any', 'all', 'median', 'nansum', 'nanmean', 'count_nonzero', 'softmax',
    'log_softmax', 'softmin', 'cumsum', 'cumprod', 'flip', 'roll', 'sort', 'argsort', 'topk',
}
_REDUCTIONS = _DIM_OPS - {'softmax', 'log_softmax', 'softmin', 'cumsum', 'cumprod', 'flip', 'roll',
                          'sort', 'argsort', 'topk'}
_SWAPS = {'transpose', 'transpose_', 'swapaxes', 'swapdims'}
# Ties that make a residual stream. Gates (x * sigmoid(...), squeeze-excitation) also tie axes,
# but they stay inside their block, so they do not make the block boundary a residual one.
_ADDITIVE = {'add', 'iadd', 'radd', 'sub', 'isub', 'rsub'}


def _as_dims(value: Any) -> list[int] | None:
    if isinstance(value, int):
        return [value]
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
        return list(value)
    return None


def _touches_channel_axis(name: str, args: tuple, kwargs: dict, ndim: int) -> bool:
    """Whether a dim-taking op (reduction, softmax, transpose, permute) works across dim 1."""
    base = name.strip('_')
    if base in _SWAPS or name in _SWAPS:
        dims = _as_dims(list(args[1:3]))
        dims = [d % ndim for d in dims] if dims else None
        return dims is None or (dims[0] != dims[1] and bool({0, 1} & set(dims)))
    if base == 'permute':
        dims = (_as_dims(args[1] if len(args) == 2 else list(args[1:])) or
                _as_dims(kwargs.get('dims')))
        return dims is None or [d % ndim for d in dims[:2]] != [0, 1]
    # reductions and friends: dim as keyword or second positional argument
    dims = kwargs.get('dim', kwargs.get('dims', args[1] if len(args) > 1 else None))
    dims = _as_dims(dims)
    if dims is None:
        return base not in _REDUCTIONS  # a full reduction leaves no channel axis behind
    return 1 in {d % ndim for d in dims}


def _keeps_channels(t: torch.Tensor, o: torch.Tensor, reduction: bool) -> bool:
    """Whether dim 1 of output ``o`` is dim 1 of input ``t`` (same channels, same order)."""
    if o.ndim < 2 or t.shape[1] != o.shape[1]:
        return False
    if t.ndim == o.ndim:
        return True
    # reshapes such as [N, C, 1, 1] -> [N, C] or [N, C, H, W] -> [N, C, H*W], and spatial means
    return t.shape[0] == o.shape[0] and (reduction or
                                         math.prod(t.shape[2:]) == math.prod(o.shape[2:]))


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


class _ChannelTracer(TorchFunctionMode):
    """Union-find over channel axes, fed by module hooks and a torch-function mode."""

    def __init__(self) -> None:
        super().__init__()
        self.parent: list[int] = []
        self.spaces: list[_Space] = []
        self.space_of_tensor: dict[int, int] = {}
        self.refs: dict[int, weakref.ref] = {}  # not kept alive: no more memory than a forward
        self.leaf_depth = 0
        self.merges = 0
        self.module_spaces: dict[tuple[str, str], int] = {}

    # ---- union-find -------------------------------------------------------------------------
    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.spaces[a].absorb(self.spaces[b])
        return a

    def new_space(self, size: int, blocked: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.spaces.append(_Space(size, blocked=blocked))
        return len(self.parent) - 1

    def space(self, t: torch.Tensor, create: bool = True) -> int | None:
        """Root space of ``t``'s channel axis; untracked tensors (e.g. the image) get a new one."""
        if id(t) in self.space_of_tensor:
            return self.find(self.space_of_tensor[id(t)])
        if not create:
            return None
        return self.assign(t, self.new_space(t.shape[1]))

    def assign(self, t: torch.Tensor, s: int) -> int:
        key, self.space_of_tensor[id(t)] = id(t), s  # the entry goes when t dies (id reused)
        self.refs[key] = weakref.ref(t, lambda _: self.space_of_tensor.pop(key, None))
        return s

    def info(self, s: int) -> _Space:
        return self.spaces[self.find(s)]

    # ---- every tensor op outside conv / BN / linear layers ------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.leaf_depth == 0:
            self.record_op(getattr(func, '__name__', ''), args, kwargs, out)
        return out

    def record_op(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        all_outs = _tensors(out)
        if not all_outs:  # x.size(), x.dim(), x.shape: nothing flows on
            return
        outs = [o for o in all_outs if o.ndim >= 2]
        ins = _tensors((args, kwargs))
        tracked = [t for t in ins if id(t) in self.space_of_tensor]
        base = name.strip('_')
        first = ins[0] if ins else None
        mixing = base in _MIXING or (
            (base in _DIM_OPS or base in _SWAPS or base == 'permute') and first is not None and
            first.ndim >= 2 and _touches_channel_axis(name, args, kwargs, first.ndim))
        linked_inputs = set()
        for o in outs:
            roots = []
            for t in tracked:
                if not mixing and _keeps_channels(t, o, base in _REDUCTIONS):
                    roots.append(self.space(t))
                    linked_inputs.add(id(t))
            if roots:
                s = roots[0]
                for r in roots[1:]:  # out + identity, x * gate: one channel axis from now on
                    s = self.union(s, r)
                if len(set(roots)) > 1 and base in _ADDITIVE:  # a residual tie
                    self.merges += 1
                    self.info(s).merged = True
                if id(o) in self.space_of_tensor:  # in-place op on a tracked tensor
                    s = self.union(s, self.space_of_tensor[id(o)])
                self.assign(o, s)
            else:
                # channels that come from nowhere we can slice (a constant, a mixing op)
                self.assign(o, self.new_space(o.shape[1], blocked=True))
            # a parameter or constant broadcast along the channels cannot be sliced either
            for t in ins:
                if id(t) in self.space_of_tensor or t.ndim == 0:
                    continue
                axis = t.ndim - o.ndim + 1
                if 0 <= axis < t.ndim and t.shape[axis] == o.shape[1] > 1:
                    self.info(self.space(o)).blocked = True
        for t in tracked:
            if id(t) not in linked_inputs:
                self.info(self.space(t)).blocked = True

    # ---- conv / BN / linear layers ------------------------------------------------------------
    def record_module(self, name: str, module: nn.Module, x: torch.Tensor, y: Any) -> None:
        if not isinstance(y, torch.Tensor) or x.ndim < 2 or y.ndim < 2:
            return self.record_opaque(x, y)
        sx = self.space(x)
        if isinstance(module, _BatchNorm):
            self.tie(name, 'bn', sx)
            self.assign(y, self.find(sx))
        elif isinstance(module, _ConvNd) and not module.transposed:
            sy = self.new_space(y.shape[1])
            if module.groups == 1:
                self.tie(name, 'conv_in', sx)
                self.tie(name, 'conv_out', sy)
            elif module.groups == module.in_channels == module.out_channels:
                sy = self.tie(name, 'dwconv', self.union(sx, sy))
            else:  # grouped conv: channels are tied in a pattern we do not slice
                self.info(sx).blocked = self.info(sy).blocked = True
            self.assign(y, self.find(sy))
        elif isinstance(module, nn.Linear) and x.ndim == 2:
            self.tie(name, 'linear_in', sx)
            self.assign(y, self.tie(name, 'linear_out', self.new_space(y.shape[1])))
        else:  # transposed conv, linear over a token axis, ...
            self.record_opaque(x, y)

    def record_opaque(self, inputs: Any, outputs: Any) -> None:
        """A layer we cannot slice: what it reads and what it writes stay unpruned."""
        for t in _tensors(inputs):
            if id(t) in self.space_of_tensor:
                self.info(self.space(t)).blocked = True
        for o in _tensors(outputs):
            if o.ndim >= 2:
                self.assign(o, self.new_space(o.shape[1], blocked=True))

    def tie(self, name: str, kind: str, s: int) -> int:
        """Add member ``(name, kind)`` to space ``s``; a shared module called twice ties spaces."""
        key = (name, kind)
        if key in self.module_spaces:
            before = self.find(self.module_spaces[key])
            if before != self.find(s):
                s = self.union(before, s)
                self.info(s).merged = True
        else:
            self.module_spaces[key] = s
            self.info(s).members.append(key)
        return self.find(s)


def _is_leaf(module: nn.Module) -> bool:
    return isinstance(module, (_ConvNd, _BatchNorm, nn.Linear))


def _is_opaque(module: nn.Module) -> bool:
    """Another layer with its own parameters (PReLU, GroupNorm, mmcv's DeformConv2d, Scale):
    its weights may lie on the channel axis and its ops may be invisible to the trace (custom
    autograd functions), so it is treated as one unprunable step."""
    return not _is_leaf(module) and any(p is not None for p in module._parameters.values())


def find_channel_groups(model: nn.Module, example_input: torch.Tensor, prune_residual: bool = False,
                        layer_calls: list | None = None) -> list[ChannelGroup]:
    """Find the prunable channel groups of ``model`` by tracing ``model(example_input)``.

    The model runs once by :func:`~mmrecprune.sparsity.flops.shape_forward` (eval mode, no_grad,
    conv / BN / linear layers return zeros of their output shape: only shapes matter here). Only
    code paths taken in that pass are seen. Modules other than conv / BN / linear that own
    parameters directly (PReLU, GroupNorm, deformable convs, a block holding a layer-scale
    parameter) are treated as opaque: nothing they read or write is pruned.

    Args:
        model (nn.Module): The model, called as ``model(example_input)``; trace the whole network
            that will be slimmed (e.g. backbone plus classifier head), since consumers outside the
            traced model cannot be adjusted.
        example_input (torch.Tensor): A small input, e.g. ``torch.randn(1, 3, 64, 64)``.
        prune_residual (bool): If False (default) return only ``'internal'`` groups, so block output
            widths (and a neck's ``in_channels``) stay unchanged. If True also return
            ``'residual'`` and ``'boundary'`` groups (their ``outputs`` name the model outputs
            whose width they set). Axes that are model outputs produced by a linear layer (logits)
            are never returned.
        layer_calls (list, optional): If given, every conv / linear / norm call of the pass is
            appended (:func:`~.flops.layer_call`) for the cost model: one pass serves both.

    Returns:
        list[ChannelGroup]: Groups in module order of their first producer.
    """
    tracer = _ChannelTracer()
    names = {m: n for n, m in model.named_modules()}
    leaves = {m for m in names if _is_leaf(m) or (m is not model and _is_opaque(m))}
    order = {n: i for i, n in enumerate(names.values())}
    merge_stack: list[int] = []
    calls: list[tuple[type, list[int]]] = []  # (module class, spaces entering or leaving)
    merge_classes: set[type] = set()

    def pre_hook(module, args, kwargs):
        if module in leaves:
            tracer.leaf_depth += 1  # its inner ops are its own business
        else:
            merge_stack.append(tracer.merges)

    def post_hook(module, args, kwargs, output):
        if layer_calls is not None and isinstance(module, COSTED_LAYERS):
            layer_calls.append(layer_call(module, args, output))
        if module in leaves:
            tracer.leaf_depth -= 1
            if tracer.leaf_depth > 0:
                return
            if _is_leaf(module) and args and isinstance(args[0], torch.Tensor):
                tracer.record_module(names[module], module, args[0], output)
            else:
                tracer.record_opaque((args, kwargs), output)
            return
        if merge_stack.pop() != tracer.merges:
            merge_classes.add(type(module))
        spaces = [tracer.space(t, create=False) for t in _tensors((args, kwargs, output))]
        calls.append((type(module), [s for s in spaces if s is not None]))

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(m.register_forward_hook(post_hook, with_kwargs=True))
    try:
        with tracer:
            output = shape_forward(model, example_input)
    finally:
        for h in handles:
            h.remove()
    # What enters or leaves a block is not "inside" it. A block is an instance of a class that
    # contains a residual tie somewhere (so a MobileNetV2 InvertedResidual without shortcut counts)
    for cls, spaces in calls:
        if cls in merge_classes:
            for s in spaces:
                tracer.info(s).boundary = True
    for i, t in enumerate(_tensors(output)):
        s = tracer.space(t, create=False)
        if s is not None:
            tracer.info(s).outputs.add(i)

    groups = []
    for s in {tracer.find(i) for i in range(len(tracer.parent))}:
        space = tracer.spaces[s]
        kinds = {k for _, k in space.members}
        if space.blocked or not kinds & set(PRODUCER_KINDS):
            continue
        if space.outputs and 'linear_out' in kinds:
            continue
        if not (space.merged or space.boundary or space.outputs):
            kind = 'internal'
        else:
            kind = 'residual' if space.merged else 'boundary'
        if kind != 'internal' and not prune_residual:
            continue
        members = sorted(set(space.members), key=lambda m: (order[m[0]], _KIND_ORDER[m[1]]))
        name = next(n for n, k in members if k in PRODUCER_KINDS)
        groups.append(ChannelGroup(name, members, space.size, kind, tuple(sorted(space.outputs))))
    groups.sort(key=lambda g: order[g.name])
    return groups
