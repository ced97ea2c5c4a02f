"""Crafted files: real pickle opcodes hidden in real checkpoints and tickets.

Each payload class of the issue that found the loaders trusting files: code execution through
names a file gives (getattr chains, planted ``__setstate__``, registry types), memory safety
(numpy reconstructors given wrong sizes, object dtypes, HistoryBuffer built from file
arguments, expanded tensors that grow on first use, storages declared larger than their
bytes, deep-copy bombs), and process state (the class-wide statistics table).
"""
import io
import pickle
import struct
import types
import zipfile

import torch

from mmrecprune.testing.checkpoint_fuzzer import rezip


class RawPickle:
    """Bytes written verbatim into the pickle stream where this object stands."""

    def __init__(self, data):
        self.data = data


class _RawPickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch we can extend
    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[RawPickle] = lambda self, obj: self.write(obj.data)


RAW_PICKLE_MODULE = types.SimpleNamespace(__name__='raw_pickle', Pickler=_RawPickler)


def write_with_payload(obj, path, payload, records=None, key='payload'):
    """``torch.save`` of ``obj`` with ``payload`` (raw opcodes) as one more key, and extra
    storage ``records`` (``{key: bytes}``) in the archive."""
    buffer = io.BytesIO()
    torch.save(dict(obj, **{key: RawPickle(payload)}), buffer, pickle_module=RAW_PICKLE_MODULE)
    data = buffer.getvalue()
    if records:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            entries = [(info.filename, zf.read(info)) for info in zf.infolist()]
        root = entries[0][0].split('/')[0]
        entries += [(f'{root}/data/{k}', v) for k, v in records.items()]
        data = rezip(entries, {})
    with open(path, 'wb') as f:
        f.write(data)
    return str(path)


def s(text):
    data = text.encode()
    return b'X' + struct.pack('<I', len(data)) + data  # BINUNICODE


def b(data):
    return g('_codecs', 'encode') + s(data.decode('latin1')) + s('latin1') + b'\x86R'


def g(module, name):
    return b'c' + module.encode() + b'\n' + name.encode() + b'\n'  # GLOBAL


def call(func, *args):
    return func + b'(' + b''.join(args) + b'tR'  # MARK args TUPLE REDUCE


def i(value):
    return b'J' + struct.pack('<i', value) if -2 ** 31 <= value < 2 ** 31 else \
        b'\x8a' + bytes([8]) + value.to_bytes(8, 'little', signed=True)


def long(value):
    """LONG1 of ``value`` in 10 bytes (``i`` writes at most 8)."""
    return b'\x8a' + bytes([10]) + value.to_bytes(10, 'little', signed=True)


GETATTR = g('__builtin__', 'getattr')
HISTORY_BUFFER = g('mmengine.logging.history_buffer', 'HistoryBuffer')
NEW_HISTORY_BUFFER = HISTORY_BUFFER + b')\x81'  # EMPTY_TUPLE, NEWOBJ
BUILTINS_MODULE = call(GETATTR, GETATTR, s('__self__'))  # getattr(getattr, '__self__')
EXEC = call(GETATTR, BUILTINS_MODULE, s('exec'))
RECONSTRUCT = g('numpy._core.multiarray', '_reconstruct')
NDARRAY = g('numpy', 'ndarray')
DTYPE_STATE = b'(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb'


def dtype(code):
    return call(g('numpy', 'dtype'), s(code), b'\x89\x88') + DTYPE_STATE


def array(shape, code, raw):
    """numpy's own array pickle: _reconstruct(ndarray, (0,), b'b') + BUILD state."""
    shape_ops = b'(' + b''.join(i(v) for v in shape) + b't'
    return (call(RECONSTRUCT, NDARRAY, i(0) + b'\x85', b(b'b')) + b'(K\x01' + shape_ops
            + dtype(code) + b'\x89' + b(raw) + b'tb')


def history_buffer(state_items):
    return NEW_HISTORY_BUFFER + b'}' + b''.join(k + v + b's' for k, v in state_items) + b'b'


def tensor(storage_numel, record_numel, offset, size, stride, key='p0', hooks=b''):
    """A FloatStorage of ``storage_numel`` declared elements (record: ``record_numel``) and a
    tensor view of it. Returns ``(opcodes, extra archive records)``."""
    pid = b'(' + s('storage') + g('torch', 'FloatStorage') + s(key) + s('cpu') + \
        i(storage_numel) + b'tQ'
    tup = lambda vals: b'(' + b''.join(i(v) for v in vals) + b't'  # noqa: E731
    ops = call(g('torch._utils', '_rebuild_tensor_v2'), pid, i(offset), tup(size), tup(stride),
               b'\x89', call(g('collections', 'OrderedDict')) + hooks)
    return ops, {key: b'\0' * 4 * record_numel}


def marker_code(marker):
    return s(f'open({str(marker)!r}, "w").write("ran")')


def payloads(marker):
    """``{name: (opcodes, extra storage records)}``; each would write ``marker`` if run."""
    code = marker_code(marker)
    nested = b']'  # a deep-copy bomb: 40 levels, each a list of the level below, twice
    for _ in range(40):
        nested = b']' + b'(' + nested + b'q\x00h\x00' + b'e'
    return {
        # code execution
        'exec through getattr chain and planted __setstate__': (
            NEW_HISTORY_BUFFER + b'}' + s('__setstate__') + EXEC + b'sb' + code + b'b', {}),
        'getattr chain to the builtins module': (BUILTINS_MODULE, {}),
        'getattr on a builtin': (call(GETATTR, g('builtins', 'print'), s('__call__')), {}),
        'exec named directly': (call(g('builtins', 'exec'), code), {}),
        'system named directly': (call(g('posix', 'system'), s(f'touch {marker}')), {}),
        'planted __setstate__ from an allowed statistic': (
            NEW_HISTORY_BUFFER + b'}' + s('__setstate__') + call(GETATTR, HISTORY_BUFFER,
                                                                   s('mean'))
            + b'sb}b', {}),
        'second BUILD after a valid one': (
            NEW_HISTORY_BUFFER + b'}' + s('max_length') + b'K\x05sb}' + s('max_length')
            + b'K\x06sb', {}),
        'OrderedDict with a planted attribute': (
            call(g('collections', 'OrderedDict')) + b'}' + s('__setstate__') + b'K\x01sb', {}),
        'tensor with a backward hook': tensor(4, 4, 0, (4, ), (1, ), hooks=b'K\x00' + g(
            'collections', 'OrderedDict') + b's'),
        # process state
        'class-wide statistics_methods replaced': (
            history_buffer([(s('statistics_methods'),
                             b'}' + s('mean') + RECONSTRUCT + b's')]), {}),
        'statistics_methods naming another function': (
            history_buffer([(s('statistics_methods'),
                             b'}' + s('mean') + call(GETATTR, HISTORY_BUFFER, s('max'))
                             + b's')]), {}),
        # memory safety
        'HistoryBuffer built with arguments': (
            HISTORY_BUFFER + i(2 ** 40) + b'\x85\x81', {}),
        'history that is not a numeric array': (
            history_buffer([(s('_log_history'), s('text'))]), {}),
        'history longer than max_length': (
            history_buffer([(s('_log_history'), array((3, ), 'f8', b'\0' * 24)),
                            (s('_count_history'), array((3, ), 'i8', b'\0' * 24)),
                            (s('max_length'), b'K\x01')]), {}),
        'numpy object dtype': (array((2, ), 'O', b'\0' * 16), {}),
        'numpy array with fewer bytes than its shape (heap read)': (
            array((1 << 20, ), 'f8', b'\0' * 8), {}),
        'numpy array with a huge shape': (array((2 ** 31, 2 ** 31), 'f8', b''), {}),
        'numpy array with attributes set': (
            call(RECONSTRUCT, NDARRAY, i(0) + b'\x85', b(b'b')) + b'}' + s('__array_interface__')
            + b'}sb', {}),
        'numpy scalar shorter than its dtype (heap read)': (
            call(g('numpy._core.multiarray', 'scalar'), dtype('f8'), b(b'\0')), {}),
        'numpy big-endian dtype state': (
            call(g('numpy', 'dtype'), s('f8'), b'\x89\x88') + DTYPE_STATE.replace(b'<', b'>'),
            {}),
        'zero-stride tensor that grows by 1 GB on first use': tensor(
            1, 1, 0, (2 ** 28, ), (0, )),
        'storage declared larger than its record': tensor(2 ** 40, 4, 0, (4, ), (1, )),
        'tensor offset past its storage': tensor(4, 4, 2 ** 30, (4, ), (1, )),
        'tensor larger than its storage': tensor(4, 4, 0, (1 << 20, ), (1, )),
        'storage without a record': (tensor(4, 4, 0, (4, ), (1, ))[0], {}),
        'deep-copy bomb (2**40 nodes)': (nested, {}),
        'list that contains itself': (b']q\x00h\x00a', {}),
        'string longer than the file': (b'X\xff\xff\xff\x7f', {}),
        # loading time and memory before any check of the finished tree
        'refusal message of a list shared at every level (2**40-item repr)': (
            nested + b')R', {}),
        'dict keys of one hash (quadratic insertion)': (
            b'}(' + b''.join(long(k * (2 ** 61 - 1)) + b'N' for k in range(1, 20001)) + b'u',
            {}),
        'stream of empty dicts (each byte a 64-byte object)': (
            b'(' + b'}' * (2 * 2 ** 20) + b't', {}),
        # the finisher once copied a shared tuple at every reference (40 tuples per GET)
        'many references to one shared nested tuple': (
            b']' + b'(N' + b'\x85' * 40 + b'q\x00' + b'h\x00' * 750_000 + b'e', {}),
        # 8 bytes each: one container per 8 bytes passed; a dict is 184-224 bytes (+ the
        # hash counts once kept for every dict with an int key)
        'one-entry dicts with int keys (8 stream bytes, ~310 of objects)': (
            b'(' + b''.join(b'}J' + struct.pack('<i', 1000 + k) + b'Ns'
                            for k in range(200_000)) + b't', {}),
        'one-entry dicts with str keys (9 stream bytes, ~290 of objects)': (
            b'(' + (b'}' + s('k') + b'Ns') * 200_000 + b't', {}),
    }


PAYLOAD_NAMES = list(payloads('x'))
