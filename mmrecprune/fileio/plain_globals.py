"""The closed table of globals every archive may name (:data:`PLAIN_GLOBALS`): each handler
receives the arguments as plain values, checks them and builds the result with our code."""
import math
from collections import Counter, OrderedDict

import torch

from .archive_values import Storage, check_int, check_int_tuple, refuse, same, short_repr

#: dtypes a tensor may have (the storage type names torch.save writes)
STORAGE_DTYPES = {
    'FloatStorage': torch.float32, 'DoubleStorage': torch.float64,
    'HalfStorage': torch.float16, 'BFloat16Storage': torch.bfloat16,
    'LongStorage': torch.int64, 'IntStorage': torch.int32, 'ShortStorage': torch.int16,
    'CharStorage': torch.int8, 'ByteStorage': torch.uint8, 'BoolStorage': torch.bool,
}



def _rebuild_tensor(args):
    if type(args) is not tuple or len(args) not in (6, 7):
        refuse(f'_rebuild_tensor_v2 takes 6 or 7 arguments, got {short_repr(args)}')
    storage, offset, size, stride, requires_grad, hooks = args[:6]
    metadata = args[6] if len(args) == 7 else None
    if not isinstance(storage, Storage):
        refuse(f'_rebuild_tensor_v2 needs a storage, got {short_repr(storage)}')
    offset = check_int(offset, 'tensor storage offset')
    size, stride = check_int_tuple(size, 'tensor size'), check_int_tuple(stride, 'tensor stride')
    if len(size) != len(stride):
        refuse(f'tensor size {size} and stride {stride} differ in length')
    if type(requires_grad) is not bool:
        refuse(f'tensor requires_grad must be a bool, got {short_repr(requires_grad)}')
    if type(hooks) is not OrderedDict or hooks or hooks.__dict__:
        refuse('tensor backward hooks must be an empty OrderedDict')
    if metadata is not None and (type(metadata) is not dict or metadata):
        refuse(f'tensor metadata must be empty, got {short_repr(metadata)}')
    numel = math.prod(size)
    if any(st == 0 and sz > 1 for sz, st in zip(size, stride)):
        refuse(f'tensor of size {size} has a zero stride ({stride}): an expanded view that '
               'would grow on first use')
    if numel:
        last = offset + sum((sz - 1) * st for sz, st in zip(size, stride))
        if last >= storage.numel or numel > storage.numel:
            refuse(f'tensor of size {size}, stride {stride}, offset {offset} reaches past its '
                   f'storage of {storage.numel} elements')
    tensor = torch.empty(0, dtype=storage.dtype)
    tensor.set_(storage.data, offset, size, stride)
    tensor.requires_grad_(requires_grad and tensor.is_floating_point())
    return tensor


def _rebuild_parameter(args):
    if type(args) is not tuple or len(args) != 3:
        refuse(f'_rebuild_parameter takes 3 arguments, got {short_repr(args)}')
    data, requires_grad, hooks = args
    if type(data) is not torch.Tensor or type(requires_grad) is not bool or \
            type(hooks) is not OrderedDict or hooks or hooks.__dict__:
        refuse('_rebuild_parameter needs a tensor, a bool and no hooks')
    return torch.nn.Parameter(data.detach(), requires_grad and data.is_floating_point())


def _ordered_dict(args):
    if not same(args, ()):
        refuse(f'OrderedDict(...) with arguments {short_repr(args)}; torch.save writes none')
    return OrderedDict()


def _counter(args):
    """``collections.Counter({key: count})``: MMEngine's ``MultiStepLR`` keeps its milestones
    in one, so every checkpoint of a step schedule holds it."""
    if type(args) is not tuple or len(args) != 1 or type(args[0]) is not dict or not all(
            type(v) in (int, float) for v in args[0].values()):
        refuse(f'collections.Counter{short_repr(args)}: only a dict of numbers')
    return Counter(args[0])


def _encode(args):
    if type(args) is not tuple or len(args) != 2 or type(args[0]) is not str or \
            not same(args[1], 'latin1'):
        refuse(f'_codecs.encode{short_repr(args)}: only (str, "latin1") makes bytes')
    try:
        return args[0].encode('latin1')
    except UnicodeEncodeError:
        refuse('_codecs.encode of a str that is not latin-1')


PLAIN_GLOBALS = {
    'torch._utils._rebuild_tensor_v2': _rebuild_tensor,
    'torch._utils._rebuild_parameter': _rebuild_parameter,
    'collections.OrderedDict': _ordered_dict,
    'collections.Counter': _counter,
    '_codecs.encode': _encode,
}



def build_ordered_dict(inst, state):
    """OrderedDict's only instance attribute in a checkpoint: ``_metadata`` (module versions,
    read by ``load_state_dict``)."""
    if inst.__dict__ or type(state) is not dict or set(state) != {'_metadata'}:
        refuse(f'OrderedDict state {short_repr(state)}; a state_dict carries only _metadata')
    meta = state['_metadata']
    if type(meta) is not OrderedDict or meta.__dict__ or not all(
            type(k) is str and type(v) is dict and all(
                type(kk) is str and type(vv) in (int, bool, type(None)) for kk, vv in v.items())
            for k, v in meta.items()):
        refuse('state_dict _metadata must map module names to {str: int}')
    inst._metadata = meta
