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

Bounds: every record is stored (not compressed), read once, and the bytes read never exceed the
file's size; the pickle stream is read with explicit lengths, and every object it makes or grows
is charged as made (``sys.getsizeof``, rounding, stack slot, a tensor's or record's hidden
parts; see :class:`~.pickle_reader.MemoryBudget`), refused above 24 bytes per byte of stream plus
8 MiB (torch.save's own streams measure 11.6x for a training checkpoint, 14-15.3x for tickets
and a ResNet-50 state_dict: tuples and tensors its memo keeps); dict keys are scalars, at most 8
of one hash in a dict (equal hashes make insertion quadratic); refusal messages show values
built only to 80 characters; the object tree (counted with repetitions, as a deep copy would
make it) is bounded by the stream's size and nested at most :data:`MAX_DEPTH` deep, and each
distinct tuple or record is rebuilt once (on the same budget), so sharing is kept, never
multiplied; the tensors' bytes (each distinct tensor once) are bounded by the storages' bytes.
So the objects made stay within 24x the stream plus 8 MiB, plus the storages' bytes (a
one-entry dict per 8 bytes of stream, the worst found, peaks at about 22x), and a file that
breaks any rule raises :class:`UnsafeCheckpointError` before the caller sees anything.

Where each rule lives: :mod:`.archive_records` (the zip container and the bytes read),
:mod:`.pickle_reader` (the opcodes), :mod:`.plain_globals` (the closed table: tensors,
``OrderedDict``, ``Counter``, bytes), :mod:`.archive_values` (the tokens, :class:`Record` and
the checks handlers share); this module bounds the finished tree.
"""
import struct
from collections import Counter, OrderedDict

import torch

from .archive_records import ArchiveBudget, open_archive
from .archive_values import (Global, Record, Storage, UnsafeCheckpointError, check_int,
                             check_int_tuple, one_of, refuse, same, short_repr)
from .pickle_reader import MemoryBudget, object_bytes, read_pickle
from .plain_globals import PLAIN_GLOBALS, STORAGE_DTYPES

__all__ = ['read_archive', 'UnsafeCheckpointError', 'Global', 'Storage', 'Record', 'check_int',
           'check_int_tuple', 'one_of', 'same', 'PLAIN_GLOBALS', 'STORAGE_DTYPES', 'MAX_DEPTH',
           'NODES_PER_BYTE']

#: nesting deeper than this is refused (no checkpoint nests more than ~10 levels)
MAX_DEPTH = 64
#: object-tree nodes allowed per byte of pickle stream (+ a constant); see module docstring
NODES_PER_BYTE = 2


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
        zf, records, file_size = open_archive(source)
        budget = ArchiveBudget(zf, records, file_size)
        if 'byteorder' in records and not one_of(budget.read('byteorder'), (b'little', b'')):
            refuse('the archive was written on a big-endian machine; re-save it on a '
                   'little-endian one')
        stream = budget.read('data.pkl')
        handlers = dict(PLAIN_GLOBALS, **(extra_globals or {}))
        memory = MemoryBudget(len(stream))  # the reader's objects, then the finisher's
        try:
            tree = read_pickle(stream, handlers, budget.storage, memory)
        except (RecursionError, MemoryError, OverflowError, struct.error) as err:
            refuse(f'malformed pickle stream: {type(err).__name__}')
    finally:
        if zf is not None:
            zf.close()
    storage_bytes = sum(s.numel * torch.empty(0, dtype=s.dtype).element_size()
                        for s in budget.storages.values())
    return _Finisher(NODES_PER_BYTE * len(stream) + 1000, storage_bytes, memory).run(tree)


class _Finisher:
    """Walks the loaded tree as a deep copy would (repeated references counted each time),
    bounds its size and depth and the tensors' bytes, and finishes records bottom-up. Each
    distinct tuple or record is rebuilt once and shared as in the file: the walk counts
    repetitions as work, never copies them."""

    def __init__(self, max_nodes, storage_bytes, memory):
        self.nodes_left = max_nodes
        self.tensor_bytes_left = storage_bytes
        self.memory = memory
        self.seen_tensors = set()
        # id(original) -> (original, rebuilt): the original is kept so its id is not reused
        # by an object made during the walk (a list's old items are dropped as it is rebuilt)
        self.rebuilt = {}

    def run(self, tree):
        try:
            return self.finish(tree)
        finally:
            self.rebuilt.clear()  # the memo lives only during the walk

    def finish(self, obj, depth=0):
        self.nodes_left -= 1
        if self.nodes_left < 0:
            refuse('the object tree is far larger than the file (repeated references that a '
                   'deep copy would multiply)')
        if depth > MAX_DEPTH:
            refuse(f'objects nested more than {MAX_DEPTH} deep')
        kind = type(obj)
        if obj is None or kind in (str, int, float, bool, bytes):
            return obj
        if kind in (torch.Tensor, torch.nn.Parameter):
            if id(obj) not in self.seen_tensors:
                self.seen_tensors.add(id(obj))
                self.tensor_bytes_left -= obj.numel() * obj.element_size()
                if self.tensor_bytes_left < 0:
                    refuse('tensors overlap in their storages (more tensor bytes than stored)')
            return obj
        if kind in (dict, OrderedDict, Counter):
            for key in list(obj):
                obj[key] = self.finish(obj[key], depth + 1)
            return obj
        if kind is list:
            for i, item in enumerate(obj):  # in place: no second list of a long one
                new = self.finish(item, depth + 1)
                if new is not item:
                    obj[i] = new
            return obj
        if kind is tuple:
            # walked at every reference (to count it and its depth there), rebuilt once
            items = [self.finish(v, depth + 1) for v in obj]
            if all(new is old for new, old in zip(items, obj)):
                return obj  # nothing in it was a record: the file's own tuple
            if id(obj) not in self.rebuilt:
                self._remember(obj, tuple(items))
            return self.rebuilt[id(obj)][1]
        if isinstance(obj, Record):
            if id(obj) not in self.rebuilt:
                for name in obj.parts():
                    setattr(obj, name, self.finish(getattr(obj, name), depth + 1))
                self._remember(obj, obj.finish())
            return self.rebuilt[id(obj)][1]
        refuse(f'the file holds {short_repr(obj)}, which is not data')

    def _remember(self, obj, new):
        # the new object and its memo entry (a pair, an id, a dict slot), on the reader's bill
        self.memory.charge(object_bytes(new) + _MEMO_ENTRY_BYTES)
        self.rebuilt[id(obj)] = (obj, new)


_MEMO_ENTRY_BYTES = 64 + 32 + 64
