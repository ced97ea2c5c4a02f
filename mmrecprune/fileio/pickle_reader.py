"""The protocol-2 pickle interpreter: the few opcodes ``torch.save`` writes, read with explicit
lengths; a GLOBAL only pushes a :class:`~.archive_values.Global` name, and only the handlers
given to :func:`read_pickle` build objects."""
import struct
from collections import Counter, OrderedDict

from .archive_values import Global, Record, check_int, refuse, same, short_repr
from .plain_globals import STORAGE_DTYPES, build_ordered_dict


def read_pickle(data, handlers, load_storage):
    """The object of the pickle stream ``data`` (bytes), built only by ``handlers``
    (``'module.name' -> handler(args)``, ``'module.Class.__new__'`` for NEWOBJ); a storage
    reference is passed to ``load_storage(key, dtype, numel)``. Its records are not finished."""
    return _Reader(data, handlers, load_storage).run()


class _Reader:
    """Protocol-2 pickle interpreter over ``data`` (bytes) that builds only plain values."""

    def __init__(self, data, handlers, load_storage):
        self.data, self.pos = data, 0
        self.handlers = handlers
        self.load_storage = load_storage
        self.stack, self.marks, self.memo = [], [], {}
        # Each new container costs 50-100 bytes from an opcode of 1-4: without a budget a
        # stream of EMPTY_DICTs grows the process 75x its size before any later check.
        self.containers_left = len(data) // _BYTES_PER_CONTAINER + _CONTAINERS_ALWAYS
        # dict -> how many of its keys share each hash (non-str keys only, see _count_hash)
        self.key_hashes = {}

    def new_container(self):
        """Count one more container against the stream's budget."""
        self.containers_left -= 1
        if self.containers_left < 0:
            refuse(f'the pickle stream makes more than one container per '
                   f'{_BYTES_PER_CONTAINER} of its bytes (torch.save writes about one per 19): '
                   'a memory bomb')

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
        self.marks.append(self.stack)
        self.stack = []

    def op_const(value):
        def op(self):
            if callable(value):
                self.new_container()
            self.stack.append(value() if callable(value) else value)
        return op

    def op_tuple(self):
        items = tuple(self.pop_mark())  # before looking up self.stack: pop_mark replaces it
        if items:
            self.new_container()
        self.stack.append(items)

    def op_tuple_n(n):
        def op(self):
            if len(self.stack) < n:
                refuse('pickle stack underflow (corrupted file)')
            self.new_container()
            items = tuple(self.stack[len(self.stack) - n:])
            del self.stack[len(self.stack) - n:]
            self.stack.append(items)
        return op

    def op_append(self):
        item = self.pop()
        self._list(self.top()).append(item)

    def op_appends(self):
        items = self.pop_mark()
        self._list(self.top()).extend(items)

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
        for i in range(0, len(items), 2):
            key = items[i]
            if not _is_key(key):
                refuse(f'dict key {short_repr(key)} is not a str, int, float, bool or None')
            if type(key) is not str:
                self._count_hash(target, key)
            target[key] = items[i + 1]

    def _count_hash(self, target, key):
        """Refuse a dict with many keys of one hash. Each insertion probes every earlier key
        of its hash, so N such keys cost N**2 / 2 probes (20k int keys ``k * (2**61 - 1)``:
        seconds; a few MB: hours). Data never has them: ints below 2**61 hash apart, and str
        (not counted) hash with a per-process salt."""
        counts = self.key_hashes.setdefault(id(target), (target, Counter()))[1]
        h = hash(key)
        counts[h] += 1
        if counts[h] > _MAX_KEYS_PER_HASH:
            refuse(f'a dict with more than {_MAX_KEYS_PER_HASH} keys of one hash (e.g. '
                   f'{short_repr(key)}): a hash-collision attack on loading time')

    def op_int(fmt, size):
        return lambda self: self.stack.append(struct.unpack(fmt, self.read(size))[0])

    def op_long1(self):
        n = self.read(1)[0]
        if n > 16:
            refuse(f'integer of {n} bytes')
        self.stack.append(int.from_bytes(self.read(n), 'little', signed=True))

    def op_binunicode(self):
        n = struct.unpack('<I', self.read(4))[0]
        try:
            self.stack.append(self.read(n).decode('utf-8', 'surrogatepass'))
        except UnicodeDecodeError:
            refuse('a string that is not UTF-8')

    def op_short_binstring(self):  # protocol 2 writes ASCII names in persistent ids this way
        try:
            self.stack.append(self.read(self.read(1)[0]).decode('ascii'))
        except UnicodeDecodeError:
            refuse('a short string that is not ASCII')

    def op_put(fmt, size):
        def op(self):
            self.memo[struct.unpack(fmt, self.read(size))[0]] = self.top()
        return op

    def op_get(fmt, size):
        def op(self):
            index = struct.unpack(fmt, self.read(size))[0]
            if index not in self.memo:
                refuse(f'pickle memo {index} used before it is set (corrupted file)')
            self.stack.append(self.memo[index])
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
        self.stack.append(Global(full))

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
        self.new_container()
        self.stack.append(handler(args))

    def op_newobj(self):
        args, cls = self.pop(), self.pop()
        if type(cls) is not Global or type(args) is not tuple:
            refuse(f'NEWOBJ of {short_repr(cls)}')
        handler = self.handlers.get(cls.name + '.__new__')
        if handler is None:
            refuse(f'cannot create a {cls.name} object')
        self.new_container()
        self.stack.append(handler(args))

    def op_build(self):
        state = self.pop()
        inst = self.top()
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
        self.stack.append(self.load_storage(pid[2], dtype, numel))


_STOP = object()
# torch.save writes one container (dict, list, tuple, object) per 19 bytes of stream or more
_BYTES_PER_CONTAINER, _CONTAINERS_ALWAYS = 8, 4096
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
