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
file's size; the pickle stream is read with explicit lengths and makes at most one container
(dict, list, tuple, object) per 8 of its bytes while it is read (torch.save writes one per 19 or
more); dict keys are scalars, at most 8 of one hash in a dict (equal hashes make insertion
quadratic); refusal messages show values built only to 80 characters; the object tree (counted
with repetitions, as a deep copy would make it) is bounded by the stream's size and nested at
most :data:`MAX_DEPTH` deep; the tensors' bytes (each distinct tensor once) are bounded by the
storages' bytes. So peak memory stays within a small multiple of the file's size (about 11x at
worst, for a stream of empty containers), and a file that breaks any rule raises
:class:`UnsafeCheckpointError` before the caller sees anything.

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
from .pickle_reader import read_pickle
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
        try:
            tree = read_pickle(stream, handlers, budget.storage)
        except (RecursionError, MemoryError, OverflowError, struct.error) as err:
            refuse(f'malformed pickle stream: {type(err).__name__}')
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
        refuse(f'the file holds {short_repr(obj)}, which is not data')
