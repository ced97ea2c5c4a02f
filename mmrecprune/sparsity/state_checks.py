"""Checks of a saved pruner state against the live pruner, before anything is loaded.

A pruner state comes from a file (a resumed checkpoint). Every ``load_state_dict`` of the
pruners and of the engine objects they delegate to checks the state against what its own
``state_dict`` writes (keys, types, dtypes, shapes against the live model's groups and
parameters, value ranges) with the helpers here, *before* it changes anything, and refuses a
bad state with one error type, :class:`PrunerStateError`, naming the entry, what was expected
and the fix. Plain PyTorch, like the rest of the engine.
"""
from __future__ import annotations

import math
import reprlib
from typing import Iterable, Mapping

import torch

#: what to do about a state that does not fit: it was not written by this run's config
FIX = ('resume from a checkpoint written by a run of this config (same model, pruner and '
       'pruner arguments), or start without `resume`')


class PrunerStateError(ValueError):
    """A saved pruner state does not fit the pruner loading it (nothing was loaded)."""


def refuse(owner: str, entry: str, problem: str) -> PrunerStateError:
    """The error for ``entry`` of ``owner``'s saved state: ``problem`` and the fix."""
    return PrunerStateError(f'{owner}: pruning state entry {entry!r} {problem}; {FIX}')


# A state from a file may share one large value at every level: repr only a bounded part of it
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, 40, 40, 40


def describe(value) -> str:
    """A short description of ``value`` for messages, built only as far as it is shown."""
    if isinstance(value, torch.Tensor):
        return f'a {value.dtype} tensor of shape {tuple(value.shape)}'
    return f'{type(value).__name__} {_SHORT.repr(value)}'


_describe = describe


def check_same(value, expected, owner: str, entry: str):
    """``value`` equal to ``expected`` (a plain scalar, or a dict of them) and of its type:
    the type first, so that a tensor or list from a file is refused, not compared."""
    same_type = type(value) is type(expected)
    if same_type and isinstance(expected, dict):
        same_type = all(type(k) is str and type(v) is type(expected.get(k)) for k, v in
                        value.items())
    if not same_type or value != expected:
        raise refuse(owner, entry, f'was saved as {describe(value)}, this run has '
                     f'{describe(expected)}')
    return value


def check_keys(state, owner: str, required: Iterable[str], optional: Iterable[str] = (),
               entry: str = 'state') -> Mapping:
    """``state`` as a mapping with str keys: every ``required`` key, nothing else but
    ``optional`` ones."""
    if not isinstance(state, Mapping):
        raise refuse(owner, entry, f'must be a dict (as state_dict() writes it), got '
                     f'{_describe(state)}')
    required, allowed = set(required), set(required) | set(optional)
    bad = sorted(repr(k) for k in state if not isinstance(k, str) or k not in allowed)
    if bad:
        raise refuse(owner, entry, f'has unknown keys {bad[:5]} (expected {sorted(allowed)})')
    missing = sorted(required - set(state))
    if missing:
        raise refuse(owner, entry, f'lacks the keys {missing}')
    return state


def check_int(value, owner: str, entry: str, low: int = 0, high: int | None = None) -> int:
    """An int (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise refuse(owner, entry, f'must be an int, got {_describe(value)}')
    if value < low or (high is not None and value > high):
        bound = f'[{low}, {high}]' if high is not None else f'>= {low}'
        raise refuse(owner, entry, f'must be an int {bound}, got {value}')
    return value


def check_choice(value, owner: str, entry: str, choices: tuple):
    """One of ``choices`` (str values)."""
    if not isinstance(value, str) or value not in choices:
        raise refuse(owner, entry, f'must be one of {choices}, got {_describe(value)}')
    return value


def check_float(value, owner: str, entry: str, low: float | None = None) -> float:
    """A finite int or float (not a bool), at least ``low`` if given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or (low is not None and value < low):
        raise refuse(owner, entry, 'must be a finite number' +
                     (f' >= {low}' if low is not None else '') + f', got {_describe(value)}')
    return value


def check_tensor(value, owner: str, entry: str, dtypes, shape=None) -> torch.Tensor:
    """A tensor of one of ``dtypes`` (a dtype or a tuple; ``'float'``: any floating dtype)
    and ``shape`` (if given); floating values must be finite."""
    dtypes = dtypes if isinstance(dtypes, tuple) else (dtypes, )
    floating = 'float' in dtypes
    if not isinstance(value, torch.Tensor) or not (
            value.dtype in dtypes or floating and value.dtype.is_floating_point):
        names = ['a floating dtype' if d == 'float' else str(d) for d in dtypes]
        raise refuse(owner, entry, f'must be a tensor of {" or ".join(names)}, got '
                     f'{_describe(value)}')
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise refuse(owner, entry, f'must have shape {tuple(shape)} (the live model\'s), '
                     f'got {tuple(value.shape)}')
    if value.dtype.is_floating_point and not bool(torch.isfinite(value).all()):
        raise refuse(owner, entry, 'holds NaN or infinite values')
    return value


def check_tensor_map(value, owner: str, entry: str, names: Iterable[str], dtypes,
                     shapes: Mapping | None = None) -> Mapping:
    """``{name: tensor}`` with exactly ``names``, each checked by :func:`check_tensor`
    (``shapes[name]`` where given)."""
    names = list(names)
    check_keys(value, owner, names, entry=entry)
    for name in names:
        check_tensor(value[name], owner, f'{entry}[{name!r}]', dtypes,
                     None if shapes is None else shapes[name])
    return value


def check_bool_masks(value, owner: str, entry: str, widths: Mapping[str, int]) -> Mapping:
    """``{group: bool mask}`` of every group, of the group's width (``widths``)."""
    return check_tensor_map(value, owner, entry, widths, torch.bool,
                            {n: (w, ) for n, w in widths.items()})


def check_channel_indices(value, owner: str, entry: str, num_channels: int) -> torch.Tensor:
    """A non-empty int64 vector of strictly increasing channel indices in
    ``[0, num_channels)``: the channels a slimmed group holds."""
    check_tensor(value, owner, entry, torch.int64)
    if value.dim() != 1 or value.numel() == 0:
        raise refuse(owner, entry, f'must be a non-empty vector of channel indices, got shape '
                     f'{tuple(value.shape)}')
    if int(value.min()) < 0 or int(value.max()) >= num_channels:
        raise refuse(owner, entry, f'must hold channel indices in [0, {num_channels}), got '
                     f'{value.min().item()}..{value.max().item()}')
    if value.numel() > 1 and not bool((value[1:] > value[:-1]).all()):
        raise refuse(owner, entry, 'must hold sorted channel indices without repeats')
    return value


def check_packed_masks(value, owner: str, entry: str, shapes: Mapping[str, torch.Size],
                       all_names: bool = True) -> Mapping:
    """``{parameter: packed mask}`` (:func:`~.mask_packing.pack_mask`'s flat uint8 bits) of
    ``shapes``' parameters (all of them unless ``all_names`` is False)."""
    if all_names:
        check_keys(value, owner, shapes, entry=entry)
    else:
        check_keys(value, owner, (), shapes, entry=entry)
    for name, bits in value.items():
        nbytes = (torch.Size(shapes[name]).numel() + 7) // 8
        check_tensor(bits, owner, f'{entry}[{name!r}]', torch.uint8, (nbytes, ))
    return value


def check_fill_values(value, owner: str, entry: str, shapes: Mapping[str, torch.Size]):
    """``{parameter: fill}`` for some of ``shapes``' parameters: finite float tensors that
    broadcast to the parameter's shape (what pruned entries hold instead of 0)."""
    check_keys(value, owner, (), shapes, entry)
    for name, fill in value.items():
        check_tensor(fill, owner, f'{entry}[{name!r}]', 'float')
        try:
            fits = torch.broadcast_shapes(fill.shape, shapes[name]) == torch.Size(shapes[name])
        except RuntimeError:
            fits = False
        if not fits:
            raise refuse(owner, f'{entry}[{name!r}]', f'has shape {tuple(fill.shape)}, which '
                         f'does not broadcast to the weight\'s {tuple(shapes[name])}')
    return value


def check_gradient_scores(value, owner: str, entry: str, shapes: Mapping[str, tuple]):
    """:meth:`~.gradient_monitor.GradientScores.state_dict` output (or None) whose sums are
    finite float tensors of ``shapes`` (``{key: shape}`` of what the criterion scores)."""
    if value is None:
        return value
    check_keys(value, owner, ('steps', 'sums'), entry=entry)
    if value['sums'] is None:
        check_int(value['steps'], owner, f'{entry}.steps', 0, 0)
        return value
    check_int(value['steps'], owner, f'{entry}.steps', 1)
    return check_tensor_map(value['sums'], owner, f'{entry}.sums', shapes, 'float', shapes)


def check_history(value, owner: str, entry: str = 'history') -> list:
    """A list of dicts of str keys and plain numbers (the per-step records); ``step`` and
    ``restored`` non-negative ints where present."""
    if not isinstance(value, list):
        raise refuse(owner, entry, f'must be a list of dicts, got {_describe(value)}')
    for i, record in enumerate(value):
        check_keys(record, owner, (), record.keys() if isinstance(record, Mapping) else (),
                   f'{entry}[{i}]')
        for key, v in record.items():
            if key in ('step', 'restored'):
                check_int(v, owner, f'{entry}[{i}].{key}')
            elif v is not None and (not isinstance(v, (int, float, bool)) or
                                    isinstance(v, float) and not math.isfinite(v)):
                raise refuse(owner, f'{entry}[{i}].{key}', f'must be a finite number, a bool '
                             f'or None, got {_describe(v)}')
    return value


def check_model_state(value, owner: str, entry: str, live: Mapping[str, torch.Tensor]):
    """A whole-model state (e.g. a rewind target): the live model's keys, each tensor of the
    live tensor's dtype and shape."""
    check_keys(value, owner, live, entry=entry)
    for name, tensor in live.items():
        check_tensor(value[name], owner, f'{entry}[{name!r}]', tensor.dtype, tensor.shape)
    return value
