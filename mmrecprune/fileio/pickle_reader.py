"""The protocol-2 pickle interpreter: the few opcodes ``torch.save`` writes, read with explicit
lengths; a GLOBAL only pushes a :class:`~.archive_values.Global` name, and only the handlers
given to :func:`read_pickle` build objects."""
import struct
import sys
from collections import Counter, OrderedDict

import torch

from .archive_values import Global, Record, check_int, refuse, same, short_repr
from .plain_globals import STORAGE_DTYPES, build_ordered_dict


def read_pickle(data, handlers, load_storage, budget=None):
    """The object of the pickle stream ``data`` (bytes), built only by ``handlers``
    (``'module.name' -> handler(args)``, ``'module.Class.__new__'`` for NEWOBJ); a storage
    reference is passed to ``load_storage(key, dtype, numel)``. Its records are not finished.
    The objects it creates are charged to ``budget`` (default: ``MemoryBudget(len(data))``)."""
    return _Reader(data, handlers, load_storage, budget or MemoryBudget(len(data))).run()


class MemoryBudget:
    """An estimate of the bytes of Python objects made from a pickle stream of ``stream_size``
    bytes, charged as they are created or grown (never refunded: freed objects counted too),
    refused above :data:`BYTES_PER_STREAM_BYTE` times the stream plus :data:`BYTES_ALWAYS`.
    Counting objects is not enough: a one-entry dict is 184-224 bytes from 5 of stream."""

    def __init__(self, stream_size):
        self.limit = BYTES_PER_STREAM_BYTE * stream_size + BYTES_ALWAYS
        self.used = 0

    def charge(self, nbytes):
        self.used += nbytes
        if self.used > self.limit:
            refuse(f'the pickle stream makes objects of more than {BYTES_PER_STREAM_BYTE} '
                   f'times its size (torch.save writes at most '
                   f'{LEGIT_BYTES_PER_STREAM_BYTE}): a memory bomb')


def object_bytes(obj):
    """What a new object takes: its size, pymalloc's rounding, and its slot on the stack."""
    return sys.getsizeof(obj) + _ROUNDING_AND_SLOT


class _Reader:
    """Protocol-2 pickle interpreter over ``data`` (bytes) that builds only plain values."""

    def __init__(self, data, handlers, load_storage, budget):
        self.data, self.pos = data, 0
        self.handlers = handlers
        self.load_storage = load_storage
        self.stack, self.marks = [], []
        # torch.save numbers its memo 0, 1, 2, ...: a list holds that in 8 bytes an entry (a
        # dict of int keys took ~90, more than any other object of the stream); other
        # indices go to a dict
        self.memo, self.sparse_memo = [], {}
        # An opcode of 1-5 bytes can make an object of 50-250 (a stream of EMPTY_DICTs grew
        # the process 75x its size): every object made or grown is charged here.
        self.budget = budget
        self.charge = budget.charge
        # id(dict) -> (dict, how many of its keys share each hash); see _count_hash
        self.key_hashes = {}
        self.storages_seen = set()

    def push(self, value, nbytes):
        """Push ``value`` after charging ``nbytes`` for it."""
        self.charge(nbytes)
        self.stack.append(value)

    def push_new(self, value):
        self.push(value, object_bytes(value))

    def read(self, n):
        end = self.pos + n
        if n < 0 or end > len(self.data):
            refuse('pickle stream ends early (truncated or corrupted file)')
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def pop(self):
        if not self.stack:
            refuse('pickle stack underflow (corrupted file)')
        return self.stack.pop()

    def pop_mark(self):
        if not self.marks:
            refuse('pickle MARK missing (corrupted file)')
        items, self.stack = self.stack, self.marks.pop()
        self.charge(-_MARK_BYTES)  # MARK's list is freed now: a live cost, not a made one
        return items

    def top(self):
        if not self.stack:
            refuse('pickle stack underflow (corrupted file)')
        return self.stack[-1]

    def run(self):
        ops = _OPS
        while True:
            code = self.read(1)[0]
            op = ops.get(code)
            if op is None:
                refuse(f'pickle opcode {bytes([code])!r} at byte {self.pos - 1} is not one '
                       'torch.save writes')
            if op(self) is _STOP:
                if len(self.stack) != 1 or self.marks:
                    refuse('pickle stream stops with a malformed stack')
                return self.stack.pop()

    # opcodes
    def op_proto(self):
        if self.read(1)[0] != 2:
            refuse('pickle protocol other than 2 (torch.save writes protocol 2)')

    def op_stop(self):
        return _STOP

    def op_mark(self):
        self.charge(_MARK_BYTES)  # a new empty list per byte of stream
        self.marks.append(self.stack)
        self.stack = []

    def op_const(value):
        def op(self):
            if callable(value):
                self.push_new(value())
            else:
                self.push(value, _SLOT)  # shared: only the stack's slot
        return op

    def op_tuple(self):
        items = tuple(self.pop_mark())  # before looking up self.stack: pop_mark replaces it
        self.push(items, object_bytes(items) if items else _SLOT)

    def op_tuple_n(n):
        def op(self):
            if len(self.stack) < n:
                refuse('pickle stack underflow (corrupted file)')
            items = tuple(self.stack[len(self.stack) - n:])
            del self.stack[len(self.stack) - n:]
            self.push_new(items)
        return op

    def op_append(self):
        item = self.pop()
        target = self._list(self.top())
        before = sys.getsizeof(target)
        target.append(item)
        self.charge(sys.getsizeof(target) - before)

    def op_appends(self):
        items = self.pop_mark()
        target = self._list(self.top())
        before = sys.getsizeof(target)
        target.extend(items)
        self.charge(sys.getsizeof(target) - before)

    def _list(self, obj):
        if type(obj) is not list:
            refuse(f'APPEND to {short_repr(obj)}, not a list')
        return obj

    def op_setitem(self):
        value, key = self.pop(), self.pop()
        self._set(self.top(), [key, value])

    def op_setitems(self):
        items = self.pop_mark()
        if len(items) % 2:
            refuse('SETITEMS with an odd number of items')
        self._set(self.top(), items)

    def _set(self, target, items):
        if type(target) not in (dict, OrderedDict):
            refuse(f'SETITEM on {short_repr(target)}, not a dict')
        before = sys.getsizeof(target)
        for i in range(0, len(items), 2):
            key = items[i]
            if not _is_key(key):
                refuse(f'dict key {short_repr(key)} is not a str, int, float, bool or None')
            if type(key) is not str:
                self._count_hash(target, key)
            target[key] = items[i + 1]
        self.charge(sys.getsizeof(target) - before)

    def _count_hash(self, target, key):
        """Refuse a dict with many keys of one hash. Each insertion probes every earlier key
        of its hash, so N such keys cost N**2 / 2 probes (20k int keys ``k * (2**61 - 1)``:
        seconds; a few MB: hours). Data never has them: ints below 2**61 hash apart, and str
        (not counted) hash with a per-process salt. Counting starts once the dict holds
        :data:`_MAX_KEYS_PER_HASH` keys (fewer cannot break the rule), so the counts are
        proportional to entries already charged; they are charged too."""
        entry = self.key_hashes.get(id(target))
        if entry is None:
            if len(target) < _MAX_KEYS_PER_HASH:
                return
            entry = self.key_hashes[id(target)] = (target, Counter(
                hash(k) for k in target if type(k) is not str))
            self.charge(_HASH_TABLE_BYTES + _HASH_ENTRY_BYTES * len(entry[1]))
        counts, h = entry[1], hash(key)
        if h not in counts:
            self.charge(_HASH_ENTRY_BYTES)
        counts[h] += 1
        if counts[h] > _MAX_KEYS_PER_HASH:
            refuse(f'a dict with more than {_MAX_KEYS_PER_HASH} keys of one hash (e.g. '
                   f'{short_repr(key)}): a hash-collision attack on loading time')

    def op_int(fmt, size):
        def op(self):
            value = struct.unpack(fmt, self.read(size))[0]
            # ints -5..256 are shared; any other number is a new object
            self.push(value, _SLOT if type(value) is int and -5 <= value <= 256 else
                      object_bytes(value))
        return op

    def op_long1(self):
        n = self.read(1)[0]
        if n > 16:
            refuse(f'integer of {n} bytes')
        self.push_new(int.from_bytes(self.read(n), 'little', signed=True))

    def op_binunicode(self):
        n = struct.unpack('<I', self.read(4))[0]
        try:
            # charged by its real size: one character outside Latin-1 makes each 2 or 4 bytes
            self.push_new(self.read(n).decode('utf-8', 'surrogatepass'))
        except UnicodeDecodeError:
            refuse('a string that is not UTF-8')

    def op_short_binstring(self):  # protocol 2 writes ASCII names in persistent ids this way
        try:
            self.push_new(self.read(self.read(1)[0]).decode('ascii'))
        except UnicodeDecodeError:
            refuse('a short string that is not ASCII')

    def op_put(fmt, size):
        def op(self):
            index, memo = struct.unpack(fmt, self.read(size))[0], self.memo
            if index < len(memo):
                memo[index] = self.top()
            elif index == len(memo):
                before = sys.getsizeof(memo)
                memo.append(self.top())
                self.charge(sys.getsizeof(memo) - before)
            else:
                before = sys.getsizeof(self.sparse_memo)
                self.sparse_memo[index] = self.top()
                self.charge(sys.getsizeof(self.sparse_memo) - before + object_bytes(index))
        return op

    def op_get(fmt, size):
        def op(self):
            index = struct.unpack(fmt, self.read(size))[0]
            if index < len(self.memo):
                self.push(self.memo[index], _SLOT)
            elif index in self.sparse_memo:
                self.push(self.sparse_memo[index], _SLOT)
            else:
                refuse(f'pickle memo {index} used before it is set (corrupted file)')
        return op

    def op_global(self):
        module = self._line()
        name = self._line()
        module = _PY2_MODULES.get(module, module)  # protocol 2 writes Python 2 names
        full = f'{module}.{name}'
        known = full in self.handlers or f'{full}.__new__' in self.handlers or (
            module == 'torch' and name in STORAGE_DTYPES)
        if not known:
            refuse(f'the file names {full!r}, which no checkpoint or ticket contains')
        token = Global(full)
        self.push(token, object_bytes(token) + object_bytes(full))

    def _line(self):
        end = self.data.find(b'\n', self.pos, self.pos + 256)
        if end < 0:
            refuse('GLOBAL name too long or unterminated')
        text = self.read(end - self.pos)
        self.pos += 1
        try:
            return text.decode('ascii')
        except UnicodeDecodeError:
            refuse('GLOBAL name that is not ASCII')

    def op_reduce(self):
        args, func = self.pop(), self.pop()
        if type(func) is not Global or type(args) is not tuple:
            refuse(f'REDUCE of {short_repr(func)}: only named functions with an argument tuple')
        handler = self.handlers.get(func.name)
        if handler is None:
            refuse(f'{func.name} cannot be called (the file may only name it)')
        self._push_built(handler(args), args)

    def op_newobj(self):
        args, cls = self.pop(), self.pop()
        if type(cls) is not Global or type(args) is not tuple:
            refuse(f'NEWOBJ of {short_repr(cls)}')
        handler = self.handlers.get(cls.name + '.__new__')
        if handler is None:
            refuse(f'cannot create a {cls.name} object')
        self._push_built(handler(args), args)

    def _push_built(self, value, args):
        """A handler's result: its size plus what ``getsizeof`` does not see (a tensor's C++
        parts; a record's finished value, made after reading). An argument tuple nothing else
        holds (refcount: ``args`` here, the caller's, getrefcount's) is freed on return: its
        bytes are given back, so each tensor is not charged twice."""
        extra = _TENSOR_BYTES if isinstance(value, torch.Tensor) else \
            _RECORD_BYTES if isinstance(value, Record) else 0
        freed = object_bytes(args) - _SLOT if sys.getrefcount(args) <= 3 and args else 0
        self.push(value, object_bytes(value) + extra - freed)

    def op_build(self):
        state = self.pop()
        inst = self.top()
        self.charge(_BUILD_BYTES)  # an OrderedDict's instance __dict__, a record's state
        if type(inst) is OrderedDict:
            build_ordered_dict(inst, state)
        elif isinstance(inst, Record):
            inst.build(state)
        else:
            refuse(f'BUILD (setting state) on {short_repr(inst)}')

    def op_binpersid(self):
        pid = self.pop()
        if type(pid) is not tuple or len(pid) != 5 or not same(pid[0], 'storage') or \
                type(pid[1]) is not Global or type(pid[2]) is not str or \
                type(pid[3]) is not str:
            refuse(f'persistent id {short_repr(pid)} is not a storage reference')
        module, _, name = pid[1].name.rpartition('.')
        if module != 'torch' or name not in STORAGE_DTYPES:
            refuse(f'storage type {pid[1].name} is not one of {sorted(STORAGE_DTYPES)}')
        dtype = STORAGE_DTYPES[name]
        numel = check_int(pid[4], 'storage size')
        # a storage's bytes are the archive's (bounded by the file); this is its objects,
        # made at its first reference
        storage = self.load_storage(pid[2], dtype, numel)
        new = id(storage) not in self.storages_seen
        self.storages_seen.add(id(storage))  # cached by load_storage: ids stay unique
        self.push(storage, _STORAGE_BYTES if new else _SLOT)


_STOP = object()
#: estimated object bytes allowed per byte of pickle stream, plus a constant; see MemoryBudget.
#: torch.save's own streams, measured with these charges: a tiny MMEngine training checkpoint
#: (optimizer, message hub, MultiStepLR) 11.6; tickets of ResNet-18 (plain 15.3, unstructured
#: with masks 15.0, with fill values 15.2, structured 14.2); a ResNet-50 state_dict 14.8: its
#: memo keeps every tuple, and each tensor is ~600 bytes of objects from ~120 of stream. 24 leaves
#: a 1.5x margin; objects stay within 24x the stream (+ 8 MiB) even for a crafted one.
BYTES_PER_STREAM_BYTE, BYTES_ALWAYS = 24, 8 * 2 ** 20
#: the most torch.save's own streams measure (see above), for the refusal message
LEGIT_BYTES_PER_STREAM_BYTE = 16
# Charges beyond sys.getsizeof, measured on CPython 3.11 (64-bit):
_SLOT = 8  # a reference on the stack
_ROUNDING_AND_SLOT = 16 + _SLOT  # pymalloc rounds to 16
_MARK_BYTES = 56 + 16 + _SLOT  # MARK: a new empty list
_TENSOR_BYTES = 256  # a tensor's C++ parts: ~300 bytes of RSS each (100k measured) - 80
_RECORD_BYTES = 256  # a record's finished value (a numpy array or scalar, a HistoryBuffer)
_BUILD_BYTES = 128
_STORAGE_BYTES = 320  # a Storage and its torch storage, not its bytes
# _count_hash: the (dict, Counter) entry, and per counted hash a Counter item and its int
_HASH_TABLE_BYTES, _HASH_ENTRY_BYTES = 512, 128
_MAX_KEYS_PER_HASH = 8
_PY2_MODULES = {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}
_OPS = {
    0x80: _Reader.op_proto, ord('.'): _Reader.op_stop, ord('('): _Reader.op_mark,
    ord('}'): _Reader.op_const(dict), ord(']'): _Reader.op_const(list),
    ord(')'): _Reader.op_const(()), ord('N'): _Reader.op_const(None),
    0x88: _Reader.op_const(True), 0x89: _Reader.op_const(False),
    ord('t'): _Reader.op_tuple, 0x85: _Reader.op_tuple_n(1), 0x86: _Reader.op_tuple_n(2),
    0x87: _Reader.op_tuple_n(3), ord('a'): _Reader.op_append, ord('e'): _Reader.op_appends,
    ord('s'): _Reader.op_setitem, ord('u'): _Reader.op_setitems,
    ord('J'): _Reader.op_int('<i', 4), ord('K'): _Reader.op_int('<B', 1),
    ord('M'): _Reader.op_int('<H', 2), ord('G'): _Reader.op_int('>d', 8),
    0x8a: _Reader.op_long1, ord('X'): _Reader.op_binunicode,
    ord('U'): _Reader.op_short_binstring,
    ord('q'): _Reader.op_put('<B', 1), ord('r'): _Reader.op_put('<I', 4),
    ord('h'): _Reader.op_get('<B', 1), ord('j'): _Reader.op_get('<I', 4),
    ord('c'): _Reader.op_global, ord('R'): _Reader.op_reduce, 0x81: _Reader.op_newobj,
    ord('b'): _Reader.op_build, ord('Q'): _Reader.op_binpersid,
}


def _is_key(key):
    return key is None or type(key) in (str, int, float, bool) or (
        type(key) is tuple and len(key) <= 8 and all(
            k is None or type(k) in (str, int, float, bool) for k in key))
