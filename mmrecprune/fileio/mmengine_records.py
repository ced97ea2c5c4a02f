"""MMEngine's message-hub objects in a checkpoint, read as data and rebuilt by our code.

MMEngine 0.10.x pickles ``HistoryBuffer`` objects (NEWOBJ + BUILD with their ``__dict__``),
their statistics functions as ``getattr(HistoryBuffer, 'mean')``, and numpy arrays, scalars
and dtypes through numpy's reconstructors. Here each of those names is an entry of
:data:`MMENGINE_GLOBALS` for :func:`~mmrecprune.fileio.archive_reader.read_archive`; none of
them calls anything named by the file. They return inert records holding the arguments and
state as plain values; after the whole file was read, each record checks its state (types,
shapes, dtypes from a closed list, byte counts equal to the data present, finite values) and
only then builds the object with its public constructor: ``np.frombuffer`` for arrays and
scalars, ``HistoryBuffer(log_history, count_history, max_length)``. ``HistoryBuffer``'s
``__setstate__`` (which writes the class-wide statistics table) is never called, so no load
can change class or module state.
"""
import math

import numpy as np
from mmengine.logging import HistoryBuffer

from .archive_reader import (Global, Record, UnsafeCheckpointError, check_int, check_int_tuple,
                             one_of, same, short_repr)

#: numpy dtypes an array or scalar in a checkpoint may have (MMEngine logs numbers)
NUMPY_DTYPES = ('b1', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4', 'f8')
#: the statistics MMEngine registers on HistoryBuffer (pickled by reference)
HISTORY_STATISTICS = ('min', 'max', 'current', 'mean')
HISTORY_STATE_KEYS = ('max_length', '_log_history', '_count_history', 'statistics_methods')
#: MMEngine's default HistoryBuffer.max_length; a longer history is refused
MAX_HISTORY_LENGTH = 1_000_000
_HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'


def _fail(msg):
    raise UnsafeCheckpointError(msg)


class DTypeRecord(Record):
    """``numpy.dtype('f8', False, True)`` + BUILD ``(3, '<', None, None, None, -1, -1, 0)``."""
    __slots__ = ('code', )

    def __init__(self, args):
        super().__init__()
        if type(args) is not tuple or len(args) != 3 or not one_of(args[0], NUMPY_DTYPES) or \
                not same(args[1:], (False, True)):
            _fail(f'numpy dtype{short_repr(args)}: only {NUMPY_DTYPES} are read')
        self.code = args[0]

    def build(self, state):
        super().build(state)
        if type(state) is not tuple or len(state) != 8 or not one_of(state[1], '<|=') or \
                not same(state[2:], (None, None, None, -1, -1, 0)):
            _fail(f'numpy dtype state {short_repr(state)} (only plain little-endian numbers)')

    def finish(self):
        return np.dtype('<' + self.code)


class ArrayRecord(Record):
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` + BUILD
    ``(1, shape, dtype, is_fortran, raw bytes)``."""
    __slots__ = ()

    def __init__(self, args):
        super().__init__()
        if type(args) is not tuple or len(args) != 3 or type(args[0]) is not Global or \
                args[0].name != 'numpy.ndarray' or not same(args[1:], ((0, ), b'b')):
            _fail(f'numpy array reconstruct{short_repr(args)}')

    def finish(self):
        state = self.state
        if type(state) is not tuple or len(state) != 5 or not same(state[0], 1):
            _fail('numpy array without its (1, shape, dtype, fortran, bytes) state')
        _, shape, dtype, fortran, raw = state
        shape = check_int_tuple(shape, 'numpy array shape', max_len=8)
        if not isinstance(dtype, np.dtype) or type(fortran) is not bool or type(raw) is not bytes:
            _fail('numpy array state must hold a dtype, a bool and bytes')
        if math.prod(shape) * dtype.itemsize != len(raw):
            _fail(f'numpy array of shape {shape} ({dtype}) declares '
                  f'{math.prod(shape) * dtype.itemsize} bytes and holds {len(raw)}')
        return np.frombuffer(raw, dtype=dtype).reshape(
            shape, order='F' if fortran else 'C').copy()


class ScalarRecord(Record):
    """``numpy.core.multiarray.scalar(dtype, raw bytes)``."""
    __slots__ = ('args', )

    def __init__(self, args):
        super().__init__()
        self.args = args

    def parts(self):
        return ('args', )

    def build(self, state):
        _fail('BUILD on a numpy scalar')

    def finish(self):
        args = self.args
        if type(args) is not tuple or len(args) != 2 or not isinstance(args[0], np.dtype) or \
                type(args[1]) is not bytes or len(args[1]) != args[0].itemsize:
            _fail(f'numpy scalar{short_repr(args)}: a dtype and exactly its item size of bytes')
        return np.frombuffer(args[1], dtype=args[0])[0]


class StatisticRecord(Record):
    """``getattr(HistoryBuffer, name)`` for one of MMEngine's four statistics."""
    __slots__ = ('name', )

    def __init__(self, args):
        super().__init__()
        if type(args) is not tuple or len(args) != 2 or type(args[0]) is not Global or \
                args[0].name != _HISTORY_BUFFER or not one_of(args[1], HISTORY_STATISTICS):
            _fail(f'getattr{short_repr(args)}: the only lookups read are HistoryBuffer.'
                  f'{{{", ".join(HISTORY_STATISTICS)}}}')
        self.name = args[1]

    def build(self, state):
        _fail('BUILD on a HistoryBuffer statistic')

    def finish(self):
        return f'HistoryBuffer.{self.name}'  # a name, checked by the buffer that holds it


class HistoryBufferRecord(Record):
    """``HistoryBuffer.__new__()`` + BUILD with its ``__dict__``."""
    __slots__ = ()

    def __init__(self, args):
        super().__init__()
        if not same(args, ()):
            _fail('HistoryBuffer.__new__ with arguments')

    def finish(self):
        state = self.state
        if type(state) is not dict or not all(one_of(k, HISTORY_STATE_KEYS) for k in state):
            _fail(f'HistoryBuffer state {short_repr(state)}; MMEngine writes only '
                  f'{list(HISTORY_STATE_KEYS)}')
        methods = state.get('statistics_methods', {})
        if type(methods) is not dict or any(
                not same(v, f'HistoryBuffer.{k}') for k, v in methods.items()):
            _fail('HistoryBuffer.statistics_methods holds something other than MMEngine\'s '
                  'own statistics')
        return history_buffer(state.get('_log_history', np.zeros(0)),
                              state.get('_count_history', np.zeros(0)),
                              state.get('max_length', MAX_HISTORY_LENGTH))


def history_buffer(log_history, count_history, max_length):
    """A ``HistoryBuffer`` from checked values (numeric 1-D arrays of one length, finite,
    within ``max_length``); used for pickled buffers and for our plain encoding alike."""
    check_int(max_length, 'HistoryBuffer.max_length', 1, MAX_HISTORY_LENGTH)
    for name, arr in (('log_history', log_history), ('count_history', count_history)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype.kind not in 'biuf' \
                or not np.isfinite(arr).all():
            _fail(f'HistoryBuffer.{name} must be a finite 1-D numeric array')
    if len(log_history) != len(count_history) or len(log_history) > max_length:
        _fail('HistoryBuffer histories differ in length or exceed max_length')
    return HistoryBuffer(log_history, count_history, max_length)


def _multiarray(name):
    return (f'numpy.core.multiarray.{name}', f'numpy._core.multiarray.{name}')


MMENGINE_GLOBALS = {
    f'{_HISTORY_BUFFER}.__new__': HistoryBufferRecord,
    'builtins.getattr': StatisticRecord,
    'numpy.dtype': DTypeRecord,
    **{name: ArrayRecord for name in _multiarray('_reconstruct')},
    **{name: ScalarRecord for name in _multiarray('scalar')},
    # a name only (the array class passed to _reconstruct): a None handler cannot be called
    'numpy.ndarray': None,
}
