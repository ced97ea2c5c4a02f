"""What the archive reader builds and the checks its handlers share: the error it raises,
the inert tokens of a pickle stream (:class:`Global`, :class:`Storage`) and the base of the
records that ``extra_globals`` handlers return (:class:`Record`)."""
import pickle

import torch


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file is not a ``torch.save`` archive of data this project reads; nothing in it was
    executed."""


class Global:
    """A GLOBAL opcode's name. Never called: handlers look it up by ``name``."""
    __slots__ = ('name', )

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f'<global {self.name}>'


class Storage:
    """An archive record read as bytes, typed by the storage name in its persistent id."""
    __slots__ = ('data', 'dtype', 'numel')

    def __init__(self, data, dtype, numel):
        self.data, self.dtype, self.numel = data, dtype, numel


class Record:
    """Base of the inert objects ``extra_globals`` handlers return; :meth:`build` (BUILD
    opcode) may set its state once, :meth:`finish` turns it into the real value after the
    whole stream was read and its parts were finished."""
    __slots__ = ('state', )

    def __init__(self):
        self.state = None

    def build(self, state):
        if self.state is not None:
            raise UnsafeCheckpointError(f'{type(self).__name__} built twice')
        self.state = state

    def parts(self):
        """Attributes holding loaded objects, finished before :meth:`finish` runs."""
        return ('state', )

    def finish(self):
        raise NotImplementedError



def refuse(msg):
    """Raise :class:`UnsafeCheckpointError` with ``msg``: the file breaks a rule."""
    raise UnsafeCheckpointError(msg)


def same(value, expected):
    """``value == expected`` for plain values and tuples of them, by type first: a loaded
    object (a tensor, a record) is never compared with ``==``, whose result it decides."""
    if type(expected) is tuple:
        return type(value) is tuple and len(value) == len(expected) and all(
            same(v, e) for v, e in zip(value, expected))
    return type(value) is type(expected) and value == expected


def one_of(value, choices):
    """``value in choices`` by :func:`same`."""
    return any(same(value, c) for c in choices)


def check_int(value, what, low=0, high=2 ** 62):
    if type(value) is not int or not low <= value <= high:
        refuse(f'{what} must be an int in [{low}, {high}], got {short_repr(value)}')
    return value


def check_int_tuple(value, what, max_len=16):
    if type(value) is not tuple or len(value) > max_len:
        refuse(f'{what} must be a tuple of at most {max_len} ints, got {short_repr(value)}')
    return tuple(check_int(v, what) for v in value)



def short_repr(value, limit=80):
    """``repr(value)`` cut to ``limit`` characters, for messages (a record by its type). Built
    only as far as the limit: a file's object graph can share one list at every level of 40,
    whose full ``repr`` would be 2**40 items long."""
    parts, room = [], [limit + 1]

    def emit(text):
        parts.append(text)
        room[0] -= len(text)

    def walk(obj):
        if room[0] <= 0:
            return
        if isinstance(obj, Record):
            emit(f'<{type(obj).__name__}>')
        elif isinstance(obj, (list, tuple, dict)):
            emit('[(' [type(obj) is tuple] if not isinstance(obj, dict) else '{')
            for i, item in enumerate(obj.items() if isinstance(obj, dict) else obj):
                if room[0] <= 0:
                    break
                if i:
                    emit(', ')
                if isinstance(obj, dict):
                    walk(item[0])
                    emit(': ')
                    item = item[1]
                walk(item)
            if type(obj) is tuple and len(obj) == 1:
                emit(',')
            emit('])' [type(obj) is tuple] if not isinstance(obj, dict) else '}')
        elif isinstance(obj, (str, bytes)):
            emit(repr(obj[:limit + 1]))
        elif isinstance(obj, torch.Tensor):
            emit(f'tensor(size={tuple(obj.shape)}, dtype={obj.dtype})')
        else:
            emit(repr(obj)[:limit + 1])

    walk(value)
    text = ''.join(parts)
    return text if len(text) <= limit else text[:limit - 3] + '...'
