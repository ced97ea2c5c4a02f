"""Read a ``torch.save`` archive as data: no object named by the file is ever called.

``torch.load`` (also with ``weights_only=True``) resolves the globals a pickle names and calls
them, an allow-list deciding which. This reader does not: it interprets the few pickle opcodes
``torch.save`` writes (protocol 2) itself, and a GLOBAL only pushes a :class:`Global` token, a
name. What a token may do is decided by this module's closed table (:data:`PLAIN_GLOBALS` plus
the caller's ``extra_globals``), whose handlers receive the arguments as plain values, check
them and build the result with our code:

* tensors: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` are *not* called; their
  arguments are checked (dtype from a closed list, offset / sizes / strides inside the storage,
  no zero strides over more than one element, no hooks, no metadata) and the tensor is made
  with ``Tensor.set_`` on a storage read from the archive record of exactly the declared size;
* ``collections.OrderedDict`` with nothing but its ``_metadata`` (module versions), and
  ``collections.Counter`` of numbers (``MultiStepLR``'s milestones);
* ``_codecs.encode`` for bytes;
* anything else only through ``extra_globals`` (MMEngine's message hub, see
  :mod:`mmrecprune.fileio.mmengine_records`), whose handlers return inert records.

Bounds: every record is stored (not compressed), read once, and the bytes read never exceed
the file's size; the pickle stream is read with explicit lengths; dict keys are scalars;
the object tree (counted with repetitions, as a deep copy would make it) is bounded by the
stream's size and nested at most :data:`MAX_DEPTH` deep; the tensors' bytes (each distinct
tensor once) are bounded by the storages' bytes. So peak memory stays within a small multiple
of the file's size, and a file that breaks any rule raises :class:`UnsafeCheckpointError` before
the caller sees anything.
"""
import io
import math
import os
import pickle
import struct
import zipfile
from collections import Counter, OrderedDict

import torch

#: nesting deeper than this is refused (no checkpoint nests more than ~10 levels)
MAX_DEPTH = 64
#: object-tree nodes allowed per byte of pickle stream (+ a constant); see module docstring
NODES_PER_BYTE = 2
#: dtypes a tensor may have (the storage type names torch.save writes)
STORAGE_DTYPES = {
    'FloatStorage': torch.float32, 'DoubleStorage': torch.float64,
    'HalfStorage': torch.float16, 'BFloat16Storage': torch.bfloat16,
    'LongStorage': torch.int64, 'IntStorage': torch.int32, 'ShortStorage': torch.int16,
    'CharStorage': torch.int8, 'ByteStorage': torch.uint8, 'BoolStorage': torch.bool,
}


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


def _fail(msg):
    raise UnsafeCheckpointError(msg)


# -- checks shared by handlers -----------------------------------------------------------------
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
        _fail(f'{what} must be an int in [{low}, {high}], got {_short(value)}')
    return value


def check_int_tuple(value, what, max_len=16):
    if type(value) is not tuple or len(value) > max_len:
        _fail(f'{what} must be a tuple of at most {max_len} ints, got {_short(value)}')
    return tuple(check_int(v, what) for v in value)


def _short(value):
    text = repr(value) if not isinstance(value, Record) else f'<{type(value).__name__}>'
    return text if len(text) <= 80 else text[:77] + '...'


# -- handlers of the plain table ---------------------------------------------------------------
def _rebuild_tensor(args):
    if type(args) is not tuple or len(args) not in (6, 7):
        _fail(f'_rebuild_tensor_v2 takes 6 or 7 arguments, got {_short(args)}')
    storage, offset, size, stride, requires_grad, hooks = args[:6]
    metadata = args[6] if len(args) == 7 else None
    if not isinstance(storage, Storage):
        _fail(f'_rebuild_tensor_v2 needs a storage, got {_short(storage)}')
    offset = check_int(offset, 'tensor storage offset')
    size, stride = check_int_tuple(size, 'tensor size'), check_int_tuple(stride, 'tensor stride')
    if len(size) != len(stride):
        _fail(f'tensor size {size} and stride {stride} differ in length')
    if type(requires_grad) is not bool:
        _fail(f'tensor requires_grad must be a bool, got {_short(requires_grad)}')
    if type(hooks) is not OrderedDict or hooks or hooks.__dict__:
        _fail('tensor backward hooks must be an empty OrderedDict')
    if metadata is not None and (type(metadata) is not dict or metadata):
        _fail(f'tensor metadata must be empty, got {_short(metadata)}')
    numel = math.prod(size)
    if any(st == 0 and sz > 1 for sz, st in zip(size, stride)):
        _fail(f'tensor of size {size} has a zero stride ({stride}): an expanded view that '
              'would grow on first use')
    if numel:
        last = offset + sum((sz - 1) * st for sz, st in zip(size, stride))
        if last >= storage.numel or numel > storage.numel:
            _fail(f'tensor of size {size}, stride {stride}, offset {offset} reaches past its '
                  f'storage of {storage.numel} elements')
    tensor = torch.empty(0, dtype=storage.dtype)
    tensor.set_(storage.data, offset, size, stride)
    tensor.requires_grad_(requires_grad and tensor.is_floating_point())
    return tensor


def _rebuild_parameter(args):
    if type(args) is not tuple or len(args) != 3:
        _fail(f'_rebuild_parameter takes 3 arguments, got {_short(args)}')
    data, requires_grad, hooks = args
    if type(data) is not torch.Tensor or type(requires_grad) is not bool or \
            type(hooks) is not OrderedDict or hooks or hooks.__dict__:
        _fail('_rebuild_parameter needs a tensor, a bool and no hooks')
    return torch.nn.Parameter(data.detach(), requires_grad and data.is_floating_point())


def _ordered_dict(args):
    if not same(args, ()):
        _fail(f'OrderedDict(...) with arguments {_short(args)}; torch.save writes none')
    return OrderedDict()


def _counter(args):
    """``collections.Counter({key: count})``: MMEngine's ``MultiStepLR`` keeps its milestones
    in one, so every checkpoint of a step schedule holds it."""
    if type(args) is not tuple or len(args) != 1 or type(args[0]) is not dict or not all(
            type(v) in (int, float) for v in args[0].values()):
        _fail(f'collections.Counter{_short(args)}: only a dict of numbers')
    return Counter(args[0])


def _encode(args):
    if type(args) is not tuple or len(args) != 2 or type(args[0]) is not str or \
            not same(args[1], 'latin1'):
        _fail(f'_codecs.encode{_short(args)}: only (str, "latin1") makes bytes')
    try:
        return args[0].encode('latin1')
    except UnicodeEncodeError:
        _fail('_codecs.encode of a str that is not latin-1')


PLAIN_GLOBALS = {
    'torch._utils._rebuild_tensor_v2': _rebuild_tensor,
    'torch._utils._rebuild_parameter': _rebuild_parameter,
    'collections.OrderedDict': _ordered_dict,
    'collections.Counter': _counter,
    '_codecs.encode': _encode,
}


def _build_ordered_dict(inst, state):
    """OrderedDict's only instance attribute in a checkpoint: ``_metadata`` (module versions,
    read by ``load_state_dict``)."""
    if inst.__dict__ or type(state) is not dict or set(state) != {'_metadata'}:
        _fail(f'OrderedDict state {_short(state)}; a state_dict carries only _metadata')
    meta = state['_metadata']
    if type(meta) is not OrderedDict or meta.__dict__ or not all(
            type(k) is str and type(v) is dict and all(
                type(kk) is str and type(vv) in (int, bool, type(None)) for kk, vv in v.items())
            for k, v in meta.items()):
        _fail('state_dict _metadata must map module names to {str: int}')
    inst._metadata = meta


# -- the unpickler -----------------------------------------------------------------------------
class _Reader:
    """Protocol-2 pickle interpreter over ``data`` (bytes) that builds only plain values."""

    def __init__(self, data, handlers, load_storage):
        self.data, self.pos = data, 0
        self.handlers = handlers
        self.load_storage = load_storage
        self.stack, self.marks, self.memo = [], [], {}

    def read(self, n):
        end = self.pos + n
        if n < 0 or end > len(self.data):
            _fail('pickle stream ends early (truncated or corrupted file)')
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def pop(self):
        if not self.stack:
            _fail('pickle stack underflow (corrupted file)')
        return self.stack.pop()

    def pop_mark(self):
        if not self.marks:
            _fail('pickle MARK missing (corrupted file)')
        items, self.stack = self.stack, self.marks.pop()
        return items

    def top(self):
        if not self.stack:
            _fail('pickle stack underflow (corrupted file)')
        return self.stack[-1]

    def run(self):
        ops = _OPS
        while True:
            code = self.read(1)[0]
            op = ops.get(code)
            if op is None:
                _fail(f'pickle opcode {bytes([code])!r} at byte {self.pos - 1} is not one '
                      'torch.save writes')
            if op(self) is _STOP:
                if len(self.stack) != 1 or self.marks:
                    _fail('pickle stream stops with a malformed stack')
                return self.stack.pop()

    # opcodes
    def op_proto(self):
        if self.read(1)[0] != 2:
            _fail('pickle protocol other than 2 (torch.save writes protocol 2)')

    def op_stop(self):
        return _STOP

    def op_mark(self):
        self.marks.append(self.stack)
        self.stack = []

    def op_const(value):
        return lambda self: self.stack.append(value() if callable(value) else value)

    def op_tuple(self):
        items = tuple(self.pop_mark())  # before looking up self.stack: pop_mark replaces it
        self.stack.append(items)

    def op_tuple_n(n):
        def op(self):
            if len(self.stack) < n:
                _fail('pickle stack underflow (corrupted file)')
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
            _fail(f'APPEND to {_short(obj)}, not a list')
        return obj

    def op_setitem(self):
        value, key = self.pop(), self.pop()
        self._set(self.top(), [key, value])

    def op_setitems(self):
        items = self.pop_mark()
        if len(items) % 2:
            _fail('SETITEMS with an odd number of items')
        self._set(self.top(), items)

    def _set(self, target, items):
        if type(target) not in (dict, OrderedDict):
            _fail(f'SETITEM on {_short(target)}, not a dict')
        for i in range(0, len(items), 2):
            key = items[i]
            if not _is_key(key):
                _fail(f'dict key {_short(key)} is not a str, int, float, bool or None')
            target[key] = items[i + 1]

    def op_int(fmt, size):
        return lambda self: self.stack.append(struct.unpack(fmt, self.read(size))[0])

    def op_long1(self):
        n = self.read(1)[0]
        if n > 16:
            _fail(f'integer of {n} bytes')
        self.stack.append(int.from_bytes(self.read(n), 'little', signed=True))

    def op_binunicode(self):
        n = struct.unpack('<I', self.read(4))[0]
        try:
            self.stack.append(self.read(n).decode('utf-8', 'surrogatepass'))
        except UnicodeDecodeError:
            _fail('a string that is not UTF-8')

    def op_short_binstring(self):  # protocol 2 writes ASCII names in persistent ids this way
        try:
            self.stack.append(self.read(self.read(1)[0]).decode('ascii'))
        except UnicodeDecodeError:
            _fail('a short string that is not ASCII')

    def op_put(fmt, size):
        def op(self):
            self.memo[struct.unpack(fmt, self.read(size))[0]] = self.top()
        return op

    def op_get(fmt, size):
        def op(self):
            index = struct.unpack(fmt, self.read(size))[0]
            if index not in self.memo:
                _fail(f'pickle memo {index} used before it is set (corrupted file)')
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
            _fail(f'the file names {full!r}, which no checkpoint or ticket contains')
        self.stack.append(Global(full))

    def _line(self):
        end = self.data.find(b'\n', self.pos, self.pos + 256)
        if end < 0:
            _fail('GLOBAL name too long or unterminated')
        text = self.read(end - self.pos)
        self.pos += 1
        try:
            return text.decode('ascii')
        except UnicodeDecodeError:
            _fail('GLOBAL name that is not ASCII')

    def op_reduce(self):
        args, func = self.pop(), self.pop()
        if type(func) is not Global or type(args) is not tuple:
            _fail(f'REDUCE of {_short(func)}: only named functions with an argument tuple')
        handler = self.handlers.get(func.name)
        if handler is None:
            _fail(f'{func.name} cannot be called (the file may only name it)')
        self.stack.append(handler(args))

    def op_newobj(self):
        args, cls = self.pop(), self.pop()
        if type(cls) is not Global or type(args) is not tuple:
            _fail(f'NEWOBJ of {_short(cls)}')
        handler = self.handlers.get(cls.name + '.__new__')
        if handler is None:
            _fail(f'cannot create a {cls.name} object')
        self.stack.append(handler(args))

    def op_build(self):
        state = self.pop()
        inst = self.top()
        if type(inst) is OrderedDict:
            _build_ordered_dict(inst, state)
        elif isinstance(inst, Record):
            inst.build(state)
        else:
            _fail(f'BUILD (setting state) on {_short(inst)}')

    def op_binpersid(self):
        pid = self.pop()
        if type(pid) is not tuple or len(pid) != 5 or not same(pid[0], 'storage') or \
                type(pid[1]) is not Global or type(pid[2]) is not str or \
                type(pid[3]) is not str:
            _fail(f'persistent id {_short(pid)} is not a storage reference')
        module, _, name = pid[1].name.rpartition('.')
        if module != 'torch' or name not in STORAGE_DTYPES:
            _fail(f'storage type {pid[1].name} is not one of {sorted(STORAGE_DTYPES)}')
        dtype = STORAGE_DTYPES[name]
        numel = check_int(pid[4], 'storage size')
        self.stack.append(self.load_storage(pid[2], dtype, numel))


_STOP = object()
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


# -- the archive -------------------------------------------------------------------------------
def _open_archive(source):
    """The zip's records by name (without the archive's folder), and the file's size."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        target, size = io.BytesIO(bytes(source)), len(source)
    else:
        target, size = source, os.path.getsize(source)
    try:
        zf = zipfile.ZipFile(target)  # a path is opened and closed by the ZipFile
        infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        _fail('not a PyTorch archive (torch.save has written zip files since PyTorch 1.6; a '
              f'truncated or corrupted file, or another format): {err}')
    if not infos:
        _fail('empty zip archive')
    root = infos[0].filename.split('/', 1)[0]
    records = {}
    for info in infos:
        head, _, rest = info.filename.partition('/')
        if head != root or not rest or rest in records:
            _fail(f'archive entry {info.filename!r} is not under one folder, or repeats')
        if info.compress_type != zipfile.ZIP_STORED:
            _fail(f'archive entry {info.filename!r} is compressed; torch.save stores entries')
        records[rest] = info
    if 'data.pkl' not in records:
        _fail('the archive has no data.pkl: not written by torch.save')
    return zf, records, size


class _ArchiveBudget:
    """Reads records, each once, and refuses to read more bytes than the file holds."""

    def __init__(self, zf, records, file_size):
        self.zf, self.records, self.left = zf, records, file_size
        self.storages = {}

    def read(self, name):
        info = self.records.get(name)
        if info is None:
            _fail(f'the archive has no record {name!r}')
        if info.file_size > self.left:
            _fail(f'archive record {name!r} declares {info.file_size} bytes, more than the '
                  'file holds')
        self.left -= info.file_size
        try:
            with self.zf.open(info) as f:
                data = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
            _fail(f'archive record {name!r} is corrupted: {err}')
        if len(data) != info.file_size:
            _fail(f'archive record {name!r} is truncated')
        return data

    def storage(self, key, dtype, numel):
        if key in self.storages:
            found = self.storages[key]
            if found.dtype != dtype or found.numel != numel:
                _fail(f'storage {key!r} is referenced with two types or sizes')
            return found
        itemsize = torch.empty(0, dtype=dtype).element_size()
        info = self.records.get(f'data/{key}')
        if info is None:
            _fail(f'storage {key!r} has no record in the archive')
        if info.file_size != numel * itemsize:
            _fail(f'storage {key!r} declares {numel} x {itemsize} bytes but its record holds '
                  f'{info.file_size}')
        data = bytearray(self.read(f'data/{key}'))
        untyped = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(
            0, dtype=torch.uint8)
        found = Storage(untyped.untyped_storage(), dtype, numel)
        self.storages[key] = found
        return found


def read_archive(source, extra_globals=None):
    """The object tree of a ``torch.save`` archive (path or bytes), read as data.

    Args:
        source (str | bytes): the file, or its bytes.
        extra_globals (dict, optional): more ``'module.name' -> handler(args)`` entries (and
            ``'module.Class.__new__'`` for NEWOBJ); handlers return values or :class:`Record`s.

    Returns:
        The loaded object, every :class:`Record` in it finished.

    Raises:
        UnsafeCheckpointError: anything in the file outside the rules of the module docstring.
    """
    zf = None
    try:
        zf, records, file_size = _open_archive(source)
        budget = _ArchiveBudget(zf, records, file_size)
        if 'byteorder' in records and not one_of(budget.read('byteorder'), (b'little', b'')):
            _fail('the archive was written on a big-endian machine; re-save it on a '
                  'little-endian one')
        stream = budget.read('data.pkl')
        handlers = dict(PLAIN_GLOBALS, **(extra_globals or {}))
        try:
            tree = _Reader(stream, handlers, budget.storage).run()
        except (RecursionError, MemoryError, OverflowError, struct.error) as err:
            _fail(f'malformed pickle stream: {type(err).__name__}')
    finally:
        if zf is not None:
            zf.close()
    storage_bytes = sum(s.numel * torch.empty(0, dtype=s.dtype).element_size()
                        for s in budget.storages.values())
    return _Finisher(NODES_PER_BYTE * len(stream) + 1000, storage_bytes).finish(tree)


class _Finisher:
    """Walks the loaded tree as a deep copy would (repeated references counted each time),
    bounds its size and depth and the tensors' bytes, and finishes records bottom-up."""

    def __init__(self, max_nodes, storage_bytes):
        self.nodes_left = max_nodes
        self.tensor_bytes_left = storage_bytes
        self.seen_tensors, self.finished = set(), {}

    def finish(self, obj, depth=0):
        self.nodes_left -= 1
        if self.nodes_left < 0:
            _fail('the object tree is far larger than the file (repeated references that a '
                  'deep copy would multiply)')
        if depth > MAX_DEPTH:
            _fail(f'objects nested more than {MAX_DEPTH} deep')
        kind = type(obj)
        if obj is None or kind in (str, int, float, bool, bytes):
            return obj
        if kind in (torch.Tensor, torch.nn.Parameter):
            if id(obj) not in self.seen_tensors:
                self.seen_tensors.add(id(obj))
                self.tensor_bytes_left -= obj.numel() * obj.element_size()
                if self.tensor_bytes_left < 0:
                    _fail('tensors overlap in their storages (more tensor bytes than stored)')
            return obj
        if kind in (dict, OrderedDict, Counter):
            for key in list(obj):
                obj[key] = self.finish(obj[key], depth + 1)
            return obj
        if kind is list:
            obj[:] = [self.finish(v, depth + 1) for v in obj]
            return obj
        if kind is tuple:
            return tuple(self.finish(v, depth + 1) for v in obj)
        if isinstance(obj, Record):
            if id(obj) not in self.finished:
                for name in obj.parts():
                    setattr(obj, name, self.finish(getattr(obj, name), depth + 1))
                self.finished[id(obj)] = obj.finish()
            return self.finished[id(obj)]
        _fail(f'the file holds {_short(obj)}, which is not data')
