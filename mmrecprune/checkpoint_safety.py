"""Let MMEngine read its own checkpoints with ``torch.load(weights_only=True)``, and nothing more.

PyTorch >= 2.6 loads with ``weights_only=True`` by default and MMEngine 0.10.7 calls
``torch.load`` without overriding it, so ``resume=True`` / ``load_from`` fail on the message
hub's ``HistoryBuffer`` objects. Their pickles hold three kinds of non-tensor globals:

* the class ``mmengine.logging.history_buffer.HistoryBuffer`` (NEWOBJ + BUILD with its
  ``__dict__``: ``max_length``, ``_log_history``, ``_count_history``, ``statistics_methods``);
* ``builtins.getattr``: protocol 2 pickles the nested functions ``HistoryBuffer.mean`` /
  ``max`` / ``min`` / ``current`` in ``statistics_methods`` as ``getattr(HistoryBuffer, name)``;
* numpy's array / scalar / dtype reconstructors for the histories.

Allow-listing the real ``getattr`` and ``HistoryBuffer`` would let a crafted file run code:
``getattr`` chains reach any builtin (``getattr(getattr, '__self__')`` is the ``builtins``
module), and ``HistoryBuffer.__setstate__`` updates ``__dict__`` with whatever it is given, so a
first BUILD can plant an instance attribute ``__setstate__`` that a second BUILD then calls.
``HistoryBuffer.__setstate__`` also writes the given ``statistics_methods`` into the class-wide
registry, so a file could replace ``mean`` for the whole process.

So each global name is mapped, only while MMEngine loads a checkpoint, to a narrow stand-in:

* ``builtins.getattr`` -> :func:`history_buffer_statistic`, which answers exactly
  ``getattr(HistoryBuffer, name)`` for the four statistics MMEngine registers and refuses
  everything else, so no pickle can reach any other object through it;
* ``...HistoryBuffer`` -> :class:`CheckedHistoryBuffer`, whose ``__setstate__`` accepts only the
  four keys above with the expected types (numeric numpy arrays, an int, the registered
  statistics functions), then turns the object into a plain ``HistoryBuffer``. Its class is no
  longer on the allow-list after that first BUILD, so a second BUILD on it is refused by
  PyTorch's unpickler: no attribute can be planted and nothing planted can be called.

Rewriting the objects at save time was the other option; it would leave every checkpoint that
MMEngine (or an earlier run) has already written unloadable, so the load side is narrowed instead.
Resume stays exact: the objects that come out are ordinary ``HistoryBuffer`` instances with the
same arrays. ``torch.load`` anywhere else keeps PyTorch's defaults, and a refused file raises
:class:`UnsafeCheckpointError`, which says what was refused and that nothing in it ran.
"""
import os.path as osp
import pickle
import re

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

HISTORY_BUFFER_PATH = 'mmengine.logging.history_buffer.HistoryBuffer'
#: The statistics MMEngine's HistoryBuffer registers itself (and so pickles by reference).
HISTORY_STATISTICS = ('min', 'max', 'current', 'mean')
_HISTORY_STATE_KEYS = {'max_length', '_log_history', '_count_history', 'statistics_methods'}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that holds objects an MMEngine checkpoint never contains; nothing ran."""


def history_buffer_statistic(obj, name):
    """Stands in for ``builtins.getattr`` while a checkpoint loads: ``HistoryBuffer.<stat>``
    for MMEngine's four statistics, a refusal for anything else."""
    if obj in (HistoryBuffer, CheckedHistoryBuffer) and name in HISTORY_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'attribute lookup getattr({_describe(obj)}, {name!r}); MMEngine checkpoints only '
        f'look up HistoryBuffer.{{{", ".join(HISTORY_STATISTICS)}}}')


def _describe(obj):
    """How the pickle names ``obj`` (stand-ins under the names they replace)."""
    if obj is history_buffer_statistic:
        return 'builtins.getattr'
    if obj in (HistoryBuffer, CheckedHistoryBuffer):
        return 'HistoryBuffer'
    kind = type(obj).__name__
    return f'<{kind} {getattr(obj, "__name__", "")}>'.replace(' >', '>')


def _check_history_array(key, value):
    if not isinstance(value, np.ndarray) or value.dtype.kind not in 'biuf':
        raise pickle.UnpicklingError(
            f'HistoryBuffer.{key} must be a numeric numpy array, got {_describe(value)}')


def _check_history_state(state):
    if not isinstance(state, dict) or not set(state) <= _HISTORY_STATE_KEYS or not all(
            isinstance(k, str) for k in state):
        keys = sorted(map(str, state)) if isinstance(state, dict) else _describe(state)
        raise pickle.UnpicklingError(
            f'HistoryBuffer state with keys {keys}; MMEngine writes only '
            f'{sorted(_HISTORY_STATE_KEYS)}')
    for key in ('_log_history', '_count_history'):
        if key in state:
            _check_history_array(key, state[key])
    if 'max_length' in state and type(state['max_length']) is not int:
        raise pickle.UnpicklingError('HistoryBuffer.max_length must be an int, got '
                                     f'{_describe(state["max_length"])}')
    methods = state.get('statistics_methods', {})
    if not isinstance(methods, dict) or any(
            not isinstance(name, str) or fn is None or fn is not _known_statistic(name)
            for name, fn in methods.items()):
        raise pickle.UnpicklingError(
            'HistoryBuffer.statistics_methods holds something other than the statistics '
            'registered in this process')


def _known_statistic(name):
    if name in HISTORY_STATISTICS:
        return getattr(HistoryBuffer, name)
    return HistoryBuffer._statistics_methods.get(name)


class CheckedHistoryBuffer(HistoryBuffer):
    """Stands in for ``HistoryBuffer`` while a checkpoint loads: checks the state it is built
    from, then becomes a plain ``HistoryBuffer`` (which the unpickler will not build again)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__class__ = HistoryBuffer

    def __setstate__(self, state):
        _check_history_state(state)
        self.__class__ = HistoryBuffer
        HistoryBuffer.__setstate__(self, dict(state))


def _numpy_globals():
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = {type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)}
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtypes]


def mmengine_checkpoint_globals():
    """What MMEngine 0.10.x checkpoints contain besides tensors and containers, each global
    name mapped to its narrow stand-in (see the module docstring)."""
    return [(CheckedHistoryBuffer, HISTORY_BUFFER_PATH),
            (history_buffer_statistic, 'builtins.getattr'), *_numpy_globals()]


def refusal_reason(err):
    """The reason in a weights-only refusal, without PyTorch's advice to load unsafely."""
    text = str(err)
    match = re.search(r'WeightsUnpickler error: (.*?)(?:\s+Please use|\s+Check the docum|$)',
                      text, re.S)
    reason = (match.group(1) if match else text.splitlines()[0] if text else repr(err))
    return ' '.join(reason.split())


def load_mmengine_checkpoint(filename, map_location=None):
    """MMEngine's local-file checkpoint loader, weights-only with the narrow stand-ins above.

    Raises:
        UnsafeCheckpointError: the file holds an object no MMEngine checkpoint contains.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        with torch.serialization.safe_globals(mmengine_checkpoint_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f'refused to load checkpoint {filename!r}: {refusal_reason(err)}. Nothing in the '
            'file was executed. A checkpoint written by MMEngine or PyTorch holds only tensors, '
            'numbers, strings, containers and MMEngine\'s HistoryBuffer; this one holds '
            'something else, so it was made by another program or crafted. If it is yours, '
            'open it where it was made and save its state_dict (tensors only) with torch.save; '
            'do not load files of unknown origin.') from None


def allow_mmengine_checkpoints():
    """Route MMEngine's local checkpoint loading (runner resume / load_from, ``Pretrained``
    init, ``load_checkpoint`` in mmdet / mmseg APIs) through :func:`load_mmengine_checkpoint`."""
    if hasattr(torch.serialization, 'safe_globals'):  # older PyTorch loads full pickles anyway
        CheckpointLoader.register_scheme(prefixes='', loader=load_mmengine_checkpoint,
                                         force=True)
