"""Checks of the parts of an MMEngine checkpoint that a resumed run feeds into live objects.

``Runner.resume`` copies ``meta['epoch']`` / ``meta['iter']`` into the train loop, executes
``meta['config']`` as a Python config file (``Config.fromstring``), seeds the run with
``meta['seed']`` and hands each entry of ``param_schedulers`` to the scheduler's
``load_state_dict``, which is ``self.__dict__.update(state)``: a key naming a method (``step``)
or an attribute (``optimizer``) replaces it on the live scheduler. :func:`check_resume_state`
checks those parts as data before any of that happens (the loader calls it on every
checkpoint); :func:`check_scheduler_states` and :func:`check_learning_rates` serve hooks that
carry scheduler states and learning rates of their own (``LotteryTicketHook``).
"""
import functools
import inspect
import logging
import math
from collections.abc import Mapping

import numpy as np
import torch

from .archive_reader import UnsafeCheckpointError
from .archive_values import short_repr

#: the deepest nesting of plain containers a resumed value may have
MAX_DEPTH = 16
_FIX = ('resume from a checkpoint that MMEngine wrote for this run (do not edit resume '
        'state by hand), or start the run without `resume`')


class ResumeStateError(UnsafeCheckpointError, ValueError):
    """A checkpoint's resume state is not what MMEngine writes; nothing of it was loaded."""


def _refuse(source, entry, problem):
    where = f'checkpoint {source!r}: ' if source else ''
    return ResumeStateError(f'{where}resume entry {entry} {problem}; {_FIX}')


@functools.lru_cache(maxsize=None)
def scheduler_members():
    """Names a scheduler state must not set: every method, property or other class attribute
    that is callable or a descriptor on the parameter schedulers registered in MMEngine (and
    in mmdet / mmseg / mmrecprune where importable), plus ``optimizer`` (the live optimizer,
    which MMEngine leaves out of the state)."""
    import mmengine.optim  # noqa: F401 (registers MMEngine's schedulers)
    from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
    from mmengine.registry import PARAM_SCHEDULERS
    registries = [PARAM_SCHEDULERS]
    for scope in ('mmdet', 'mmseg', 'mmrecprune'):
        try:
            registry = __import__(f'{scope}.registry', fromlist=['PARAM_SCHEDULERS'])
            registry.PARAM_SCHEDULERS.import_from_location()
            registries.append(registry.PARAM_SCHEDULERS)
        except Exception:  # noqa: BLE001 (a scope that is not installed adds no classes)
            continue
    classes = {_ParamScheduler}
    for registry in registries:
        classes.update(c for c in registry.module_dict.values() if inspect.isclass(c))
    names = {'optimizer'}
    for cls in classes:
        for name in dir(cls):
            attr = inspect.getattr_static(cls, name, None)
            if callable(attr) or hasattr(attr, '__get__') or hasattr(attr, '__set__'):
                names.add(name)
    return frozenset(names)


def _check_plain(value, source, entry, depth=0):
    """Plain data: None, bool, int, float, str, numeric tensors / numpy values, and lists,
    tuples and dicts (``Counter`` and ``OrderedDict`` too) of plain data with int or str keys.
    ``entry`` is the path from the top, as a tuple of keys, formatted only for an error (a
    file may hold one large key under many references: formatting every path was quadratic)."""
    entry = (entry, ) if isinstance(entry, str) else entry
    if depth > MAX_DEPTH:
        raise _refuse(source, _path(entry), f'is nested deeper than {MAX_DEPTH} levels')
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        if isinstance(value, torch.Tensor) or value.dtype.kind in 'biuf':
            return
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, source, entry + (i, ), depth + 1)
        return
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, (int, str)):
                raise _refuse(source, _path(entry), f'has a key {short_repr(key)} of type '
                              f'{type(key).__name__} (keys are str or int)')
            _check_plain(item, source, entry + (key, ), depth + 1)
        return
    raise _refuse(source, _path(entry), f'holds a {type(value).__name__}, not plain data '
                  '(numbers, strings, lists, dicts)')


def _path(entry):
    return entry[0] + ''.join(f'[{short_repr(k, 40)}]' for k in entry[1:])


def _check_count(meta, key, source, high=None):
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 \
            or (high is not None and value > high):
        bound = f'in [0, {high}]' if high is not None else '>= 0'
        raise _refuse(source, f'meta[{short_repr(key, 40)}]', f'must be an int {bound}, got '
                      f'{short_repr(value)}')


def check_meta(meta, source=None):
    """``meta`` of an MMEngine checkpoint: str keys, plain values, ``epoch`` / ``iter``
    non-negative ints and ``seed`` a 32-bit unsigned int or None where present (``config``
    is dropped before, see :func:`check_resume_state`)."""
    if not isinstance(meta, Mapping) or not all(isinstance(k, str) for k in meta):
        raise _refuse(source, "'meta'", 'must be a dict with str keys')
    for key in ('epoch', 'iter'):
        if key in meta:
            _check_count(meta, key, source)
    if meta.get('seed') is not None:
        _check_count(meta, 'seed', source, 2 ** 32 - 1)
    for key, value in meta.items():
        _check_plain(value, source, ('meta', key))


def check_scheduler_state(state, source=None, entry='param_schedulers[0]'):
    """One parameter scheduler's state: a dict whose keys are str, no dunder and no name of
    a method or attribute of a registered scheduler class (:func:`scheduler_members`), and
    whose values are plain data."""
    if not isinstance(state, Mapping):
        raise _refuse(source, entry, f'must be a dict (a scheduler state), got '
                      f'{type(state).__name__}')
    members = scheduler_members()
    for key, value in state.items():
        if not isinstance(key, str):
            raise _refuse(source, entry, f'has a key {short_repr(key)} of type '
                          f'{type(key).__name__} (scheduler states have str keys)')
        at = f'{entry}[{short_repr(key, 40)}]'
        if key.startswith('__') or key in members:
            raise _refuse(source, at, 'names a method or attribute of the scheduler, which '
                          'loading the state would replace')
        _check_plain(value, source, at)
        _check_scheduler_value(key, value, source, at)


#: the types of the entries every MMEngine scheduler state has (``_ParamScheduler.__init__``)
_SCHEDULER_INTS = {'last_step': -1, '_global_step': -1, 'begin': 0, 'end': 0}
_SCHEDULER_BOOLS = ('by_epoch', 'verbose', '_get_value_called_within_step')
_SCHEDULER_VALUES = ('base_values', '_last_value')


def _check_scheduler_value(key, value, source, at):
    """The entries whose type MMEngine fixes, and no NaN anywhere: a str ``last_step`` crashed
    the scheduler hook after an epoch, a NaN ``gamma`` trained on with lr nan."""
    if key in _SCHEDULER_INTS and (type(value) is not int or value < _SCHEDULER_INTS[key]):
        raise _refuse(source, at, f'must be an int >= {_SCHEDULER_INTS[key]}, got '
                      f'{short_repr(value)}')
    if key in _SCHEDULER_BOOLS and type(value) is not bool:
        raise _refuse(source, at, f'must be True or False, got {short_repr(value)}')
    if key == 'param_name' and type(value) is not str:
        raise _refuse(source, at, f'must be a str, got {short_repr(value)}')
    if key in _SCHEDULER_VALUES and (
            not isinstance(value, (list, tuple)) or not all(
                type(v) in (int, float) and math.isfinite(v) for v in value)):
        raise _refuse(source, at, f'must be a list of finite numbers, got {short_repr(value)}')
    if _has_nan(value):
        raise _refuse(source, at, 'holds NaN')


def _has_nan(value, depth=0):
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and bool(torch.isnan(value).any())
    if isinstance(value, np.ndarray):
        return value.dtype.kind == 'f' and bool(np.isnan(value).any())
    if depth < MAX_DEPTH and isinstance(value, (list, tuple)):
        return any(_has_nan(v, depth + 1) for v in value)
    if depth < MAX_DEPTH and isinstance(value, Mapping):
        return any(_has_nan(v, depth + 1) for v in value.values())
    return False


def check_scheduler_states(states, source=None, entry='param_schedulers'):
    """``param_schedulers`` as MMEngine writes it: a list of scheduler states, or (several
    optimizers) a dict of such lists by optimizer name."""
    if isinstance(states, Mapping):
        for name, group in states.items():
            if not isinstance(name, str):
                raise _refuse(source, entry, f'has a key {short_repr(name)} (optimizer names '
                              'are str)')
            check_scheduler_states(group, source, f'{entry}[{short_repr(name, 40)}]')
        return
    if not isinstance(states, (list, tuple)):
        raise _refuse(source, entry, 'must be a list of scheduler states (or a dict of such '
                      f'lists by optimizer name), got {type(states).__name__}')
    for i, state in enumerate(states):
        check_scheduler_state(state, source, f'{entry}[{i}]')


def check_learning_rates(lrs, source=None, entry='initial_lrs'):
    """A list of finite non-negative learning rates (one per parameter group)."""
    if not isinstance(lrs, (list, tuple)):
        raise _refuse(source, entry, f'must be a list of learning rates, got '
                      f'{type(lrs).__name__}')
    for i, lr in enumerate(lrs):
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) \
                or lr < 0:
            raise _refuse(source, f'{entry}[{i}]', 'must be a finite number >= 0, got '
                          f'{short_repr(lr)}')


def _drop_config(meta, source):
    """Remove ``meta['config']``: ``Runner.resume`` executes it as a Python config file (to
    compare GPU counts). MMEngine writes the config under ``cfg`` and reads it only as text;
    ``config`` comes from mmcv 1.x checkpoints (model-zoo weights), which still load with
    ``load_from`` or ``init_cfg``, the one check it fed skipped."""
    if isinstance(meta, dict) and 'config' in meta:
        from mmengine.logging import print_log
        del meta['config']
        print_log(f"checkpoint {source!r}: meta['config'] was dropped unread (MMEngine's "
                  'resume would execute it as Python; MMEngine itself writes meta["cfg"])',
                  logger='current', level=logging.WARNING)


def check_resume_state(checkpoint, source=None):
    """Check what ``Runner.resume`` feeds into live objects (``meta``, ``param_schedulers``)
    where the checkpoint has them, after dropping ``meta['config']`` (which it would execute);
    returns the checkpoint.

    Raises:
        ResumeStateError: an entry is not what MMEngine writes (an ``UnsafeCheckpointError``
            and a ``ValueError``); nothing of the checkpoint was used.
    """
    if isinstance(checkpoint, Mapping):
        if 'meta' in checkpoint:
            _drop_config(checkpoint['meta'], source)
            check_meta(checkpoint['meta'], source)
        if 'param_schedulers' in checkpoint:
            check_scheduler_states(checkpoint['param_schedulers'], source)
    return checkpoint
