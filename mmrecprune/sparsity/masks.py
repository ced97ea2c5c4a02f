"""Unstructured weight masks: which weights are prunable, and how masks are enforced.

N:M masks (``'2:4'``: at most 2 of every 4 consecutive weights kept) are unstructured masks
with a layout rule (:mod:`.nm_layout`); :func:`~mmrecprune.sparsity.nm_magnitude_masks`
computes them.

A mask set is a ``dict[str, torch.BoolTensor]`` keyed by parameter name, each mask with the
shape of its weight; ``True`` keeps a weight, ``False`` prunes it. Parameters are passed around
as ``dict[str, Tensor]`` in the same key order (what :func:`prunable_parameters` returns).

Plain PyTorch: nothing here knows about runners, hooks or optimizer wrappers (the one hook is
PyTorch's own optimizer step post-hook, see :meth:`WeightMasks.apply_after_optimizer_steps`).
"""
import weakref
from fnmatch import fnmatchcase

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from .nm_layout import nm_groups, nm_ungroup, parse_nm_pattern

#: Default exclusion: the stem of an MMDetection / MMSegmentation ResNet (``conv1`` for the plain
#: stem, ``stem`` for ``deep_stem=True``), wherever the backbone sits (see :func:`name_matches`).
DEFAULT_EXCLUDE = ('conv1.*', 'stem.*')

_PACK_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


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


def check_masks(params, masks):
    """Raise ``ValueError`` unless ``masks`` has exactly the keys and shapes of ``params``."""
    if set(params) != set(masks):
        missing = sorted(set(params) - set(masks))
        unknown = sorted(set(masks) - set(params))
        raise ValueError(f'masks do not match the parameters: missing masks for {missing[:5]}'
                         f'{" ..." if len(missing) > 5 else ""}, masks for unknown parameters '
                         f'{unknown[:5]}{" ..." if len(unknown) > 5 else ""}')
    for name, p in params.items():
        mask = masks[name]
        if mask.dtype != torch.bool:
            raise ValueError(f'mask of {name!r} has dtype {mask.dtype}, expected torch.bool')
        if mask.shape != p.shape:
            raise ValueError(f'mask of {name!r} has shape {tuple(mask.shape)}, but the '
                             f'parameter has shape {tuple(p.shape)}')


@torch.no_grad()
def apply_masks(tensors, masks):
    """Zero, in place, the entries of each tensor where its mask is ``False``.

    The one function that enforces masks. ``tensors`` is usually the pruned weights, but any
    tensors of the same shapes work (gradients, optimizer momentum buffers). Entries are set to
    exactly ``0`` (also where they held ``nan`` / ``inf``). Tensors whose name has no mask are
    left unchanged; a mask whose name is missing from ``tensors`` is an error.

    Args:
        tensors (dict[str, Tensor]): Tensors to mask, modified in place.
        masks (dict[str, BoolTensor]): Masks by name.
    """
    for name, mask in masks.items():
        if name not in tensors:
            raise ValueError(f'mask {name!r} has no tensor to apply to')
        tensor = tensors[name]
        if mask.shape != tensor.shape:
            raise ValueError(f'mask of {name!r} has shape {tuple(mask.shape)}, but the tensor '
                             f'has shape {tuple(tensor.shape)}')
    for name, mask in masks.items():  # one tensor at a time: the bits live briefly
        tensor, mask = tensors[name], mask.to(tensors[name].device)
        if tensor.element_size() in _BITS_DTYPES:
            zero_pruned_bits_([tensor], [keep_bits(mask, tensor.dtype)])
        else:  # complex
            tensor.masked_fill_(~mask, 0)


@torch.no_grad()
def fill_pruned_(params, masks, fills):
    """Set, in place, each ``params[name]``'s pruned entries (``~masks[name]``) to
    ``fills[name]`` (a tensor broadcasting to it), for every name in ``fills``."""
    for name, fill in fills.items():
        param = params[name]
        fill = torch.as_tensor(fill).to(device=param.device, dtype=param.dtype)
        param.copy_(torch.where(masks[name].to(param.device), param, fill))


@torch.no_grad()
def zero_pruned_(tensors, pruned):
    """Set ``tensors[i]`` to exactly 0 where ``pruned[i]`` is True (lists, same order).

    The hot-path form of :func:`apply_masks` for callers that cache the inverted masks on the
    right device (the optimizer wrappers do this once per mask change, not once per step).
    """
    for tensor, where in zip(tensors, pruned):
        tensor.masked_fill_(where, 0)


#: The integer type of each float type's size: a float tensor viewed as it is ANDed with a mask
#: of all-one bits (kept) or all-zero bits (pruned) by :func:`zero_pruned_bits_`.
_BITS_DTYPES = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def keep_bits(mask, dtype):
    """``mask`` (True: kept) as an integer tensor of ``dtype``'s size: all bits set where kept,
    none where pruned (what :func:`zero_pruned_bits_` ANDs a tensor of ``dtype`` with)."""
    bits = _BITS_DTYPES[torch.empty((), dtype=dtype).element_size()]
    return mask.to(bits).neg_()  # True -> -1 (all bits set), False -> 0


@torch.no_grad()
def zero_pruned_bits_(tensors, bits):
    """Set ``tensors[i]`` to exactly ``+0`` where ``bits[i]`` (:func:`keep_bits`) is 0 by a
    bitwise AND on the tensor's bits: the result of ``masked_fill_(pruned, 0)`` (``nan`` and
    ``inf`` become 0 too), with a vectorised kernel, about ten times faster on a CPU than
    ``masked_fill_``'s (what the optimizer wrappers run twice per step)."""
    for tensor, keep in zip(tensors, bits):
        tensor.view(keep.dtype).bitwise_and_(keep)


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


def pack_mask(mask):
    """Pack a boolean mask into bits: a flat ``uint8`` tensor of ``ceil(numel / 8)`` bytes.

    Bits follow ``numpy.packbits`` (big-endian within a byte, row-major over the mask), so
    ``pack_mask(m).numpy()`` equals ``np.packbits(m.numpy())``. The shape is not stored: pass it
    to :func:`unpack_mask`.
    """
    if mask.dtype != torch.bool:
        raise ValueError(f'pack_mask expects a torch.bool mask, got {mask.dtype}')
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor(_PACK_BIT_WEIGHTS, dtype=torch.uint8, device=mask.device)
    return (flat.view(-1, 8).to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed, shape):
    """Inverse of :func:`pack_mask`: a boolean tensor of ``shape`` on ``packed``'s device."""
    shape = torch.Size(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError(f'unpack_mask expects a flat torch.uint8 tensor, got dtype '
                         f'{packed.dtype} with shape {tuple(packed.shape)}')
    numel = shape.numel()
    if packed.numel() != (numel + 7) // 8:
        raise ValueError(f'packed mask has {packed.numel()} bytes, but shape {tuple(shape)} '
                         f'needs {(numel + 7) // 8}')
    weights = torch.tensor(_PACK_BIT_WEIGHTS, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(1) & weights) != 0
    return bits.reshape(-1)[:numel].reshape(shape)


class WeightMasks:
    """Fixed unstructured masks enforced around optimizer steps (how an unstructured cut holds).

    The parameters are kept by reference and the masks are cached on their devices once (as
    :func:`keep_bits`), so a step costs one bitwise AND (zeros, :func:`zero_pruned_bits_`) or
    ``masked_scatter_`` (fill values) per masked tensor: :meth:`zero_gradients` before the
    optimizer (momentum, Adam moments and gradient clipping ignore pruned entries) and
    :meth:`apply` after it. With a zero weight and a
    zero gradient SGD, Adam and AdamW leave a pruned entry at 0, but not a fill value: weight
    decay adds ``weight_decay * fill`` to its gradient (and momentum / Adam's normalisation carry
    it on), AdamW shrinks it by ``lr * weight_decay``, so :meth:`apply` right after each step is
    what makes a state_dict taken then (a checkpoint hook's) hold the fills exactly.

    The pruning optimizer wrapper calls both around each step; a model trained by a plain
    optimizer (a ticket backbone, see :func:`~mmrecprune.sparsity.freeze_masks`) has
    :meth:`apply` called by :meth:`apply_after_optimizer_steps`.

    Args:
        params (dict[str, nn.Parameter]): The masked parameters.
        masks (dict[str, BoolTensor]): One mask per parameter, same keys and shapes.
        fill_values (dict[str, Tensor], optional): For some masks, the value their pruned
            entries hold instead of 0 (broadcasting to the weight; ticket format v2). Held in
            the weight's dtype (a float64 fill is held as the float32 weight rounds it).
    """

    def __init__(self, params, masks, fill_values=None):
        check_masks(params, masks)
        self.params = dict(params)
        self.masks = dict(masks)
        self.fills = {name: torch.as_tensor(fill).to(dtype=params[name].dtype)
                      for name, fill in (fill_values or {}).items()}
        self._param_ids = frozenset(id(p) for p in self.params.values())
        self._cache()

    def _layout(self):
        return tuple((p.device, p.dtype) for p in self.params.values())

    def _cache(self):
        """Cache the inverted masks and the fills on the parameters' devices, in their dtypes
        (again when the model moved: a ticket backbone is built on the CPU, then the runner
        moves it to the GPU)."""
        self._cached_layout = self._layout()
        self.masks = {name: mask.to(self.params[name].device)
                      for name, mask in self.masks.items()}
        self.fills = {name: fill.to(device=self.params[name].device,
                                    dtype=self.params[name].dtype)
                      for name, fill in self.fills.items()}
        zeroed = [name for name in self.masks if name not in self.fills]
        bits = {name: keep_bits(mask, self.params[name].dtype)
                for name, mask in self.masks.items()}
        self._hot_params = [self.params[name] for name in zeroed]
        self._hot_bits = [bits[name] for name in zeroed]
        # fill values: the pruned entries' values, in mask order, for one masked_scatter_
        self._fill_params = [self.params[name] for name in self.fills]
        self._fill_pruned = [~self.masks[name] for name in self.fills]
        self._fill_values = [torch.broadcast_to(fill, self.params[name].shape)[~self.masks[name]]
                             for name, fill in self.fills.items()]
        self._grad_params = [self.params[name] for name in self.masks]
        self._grad_bits = [bits[name] for name in self.masks]

    def _follow_the_parameters(self):
        if self._layout() != self._cached_layout:
            self._cache()

    @torch.no_grad()
    def apply(self):
        """Set the pruned weights to 0 (or their fill value, exactly) in place."""
        self._follow_the_parameters()
        zero_pruned_bits_(self._hot_params, self._hot_bits)
        for param, pruned, values in zip(self._fill_params, self._fill_pruned,
                                         self._fill_values):
            param.masked_scatter_(pruned, values)

    def zero_gradients(self):
        """Zero the gradients of pruned entries (parameters without a gradient are skipped)."""
        self._follow_the_parameters()
        with_grad = [(p.grad, bits if p.grad.element_size() == bits.element_size()
                      else keep_bits(bits != 0, p.grad.dtype))  # a grad of another size: rare
                     for p, bits in zip(self._grad_params, self._grad_bits)
                     if p.grad is not None]
        zero_pruned_bits_([g for g, _ in with_grad], [b for _, b in with_grad])

    def mask_optimizer_state(self, optimizer):
        """Zero every optimizer state tensor of a masked parameter's shape (momentum buffers,
        Adam moments) at the pruned entries, so entries pruned now restart from zero state."""
        for name, p in self.params.items():
            state = optimizer.state.get(p)
            if not state:
                continue
            buffers = {key: value for key, value in state.items()
                       if hasattr(value, 'shape') and value.shape == p.shape}
            apply_masks(buffers, dict.fromkeys(buffers, self.masks[name]))

    def gradient_hook(self, name):
        """A tensor hook for ``params[name]`` (``register_hook``) that zeroes the pruned entries
        of its gradient as backward produces it (before clipping or any optimizer sees it)."""
        index = list(self.masks).index(name)

        def hook(grad):
            bits = self._grad_bits[index]
            if bits.device != grad.device:  # the model moved since
                self._cache()
                bits = self._grad_bits[index]
            if bits.element_size() != grad.element_size():
                bits = keep_bits(bits != 0, grad.dtype)
            grad = grad.clone(memory_format=torch.preserve_format)
            zero_pruned_bits_([grad], [bits])
            return grad
        return hook

    def stepped_by(self, optimizer):
        """Whether ``optimizer`` updates any of the masked parameters."""
        return any(id(p) in self._param_ids
                   for group in optimizer.param_groups for p in group['params'])

    def apply_after_optimizer_steps(self):
        """From now on, :meth:`apply` right after every step of any optimizer that updates
        these parameters, including optimizers built later (a runner builds its optimizer after
        the model). Returns a handle; ``handle.remove()`` stops it.

        The trigger is PyTorch's global optimizer step post-hook, the one hook that runs after
        a step's update for an optimizer the model never sees: a per-optimizer
        ``register_step_post_hook`` needs the optimizer, which does not exist when a backbone
        is built, and parameter hooks (``register_hook``,
        ``register_post_accumulate_grad_hook``) run during backward, before the update. A forward
        pre-hook runs too late: a checkpoint hook saves between the step and the next forward.
        The hook holds these masks weakly: dropping the model frees it and ends the enforcing.
        """
        _register_step_post_hook()
        _AFTER_STEPS.add(self)
        return _AfterStepsHandle(self)


#: WeightMasks applied after every optimizer step that updates their parameters (held weakly).
_AFTER_STEPS = weakref.WeakSet()
_STEP_POST_HOOK = []


def _register_step_post_hook():
    """Register, once per process, the one global step post-hook serving :data:`_AFTER_STEPS`.
    One hook that is never removed: entries leave a WeakSet (safe while it is iterated), where
    removing torch's own hook entries from a weakref callback could happen while torch iterates
    them (a garbage collection inside another optimizer's step)."""
    if not _STEP_POST_HOOK:
        _STEP_POST_HOOK.append(
            register_optimizer_step_post_hook(_apply_after_step))


def _apply_after_step(optimizer, args, kwargs):
    for masks in list(_AFTER_STEPS):
        if masks.stepped_by(optimizer):
            masks.apply()


class _AfterStepsHandle:
    """What :meth:`WeightMasks.apply_after_optimizer_steps` returns: ``remove()`` stops it."""

    def __init__(self, masks):
        self._masks = weakref.ref(masks)

    def remove(self):
        masks = self._masks()
        if masks is not None:
            _AFTER_STEPS.discard(masks)


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
