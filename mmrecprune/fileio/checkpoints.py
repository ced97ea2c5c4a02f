"""Every checkpoint and ticket the project loads goes through here.

* :func:`read_plain`: a file (or bytes) that may hold only tensors, numbers, strings, bytes and
  containers: tickets, the ticket header a detector checkpoint carries, and the checkpoints of
  runs with :class:`~mmrecprune.hooks.PlainCheckpointHook` (every run of ``tools/train.py``).
  Those files also load with plain ``torch.load(weights_only=True)``, no allow-list needed.
* :func:`load_mmengine_checkpoint`: any MMEngine / PyTorch checkpoint, MMEngine's message hub
  included (``HistoryBuffer``, numpy arrays and scalars), read as data and rebuilt by our code
  (:mod:`.mmengine_records`). ``import mmrecprune`` routes MMEngine's local-file
  ``CheckpointLoader`` here (``--resume``, ``load_from``, ``Pretrained``, ``init_detector``...).

Neither calls ``torch.load``: both use :func:`~.archive_reader.read_archive`, which calls
nothing the file names. A refused file raises :class:`UnsafeCheckpointError`.
"""
import logging
import os.path as osp
from collections import OrderedDict

import numpy as np
import torch

from .archive_reader import UnsafeCheckpointError, read_archive
from .resume_state import check_resume_state

#: the keys of a HistoryBuffer in a plain checkpoint's message hub (see plain_checkpoint)
PLAIN_HISTORY_KEYS = ('log_history', 'count_history', 'max_length')
_REFUSED = ('Nothing in the file was executed. A checkpoint written by MMEngine or PyTorch '
            'holds only tensors, numbers, strings, containers and MMEngine\'s message hub; if '
            'this file is yours, open it where it was made and save its state_dict (tensors '
            'only) with torch.save; do not load files of unknown origin.')


def read_plain(source, name=None):
    """The data in a file (path or bytes) holding only tensors and plain values.

    Raises:
        UnsafeCheckpointError: anything else in it (nothing was executed).
    """
    try:
        return read_archive(source)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(
            f'refused to load {name or source!r}: {err}. Nothing in the file was '
            'executed.') from None


def load_mmengine_checkpoint(filename, map_location=None):
    """MMEngine's local-file checkpoint loader: the checkpoint as data, its message hub's
    ``HistoryBuffer``s and numpy values rebuilt by our code after they were checked.

    Args:
        filename (str): the checkpoint.
        map_location (str | torch.device | callable, optional): a device moves every tensor
            there; ``None``, ``'cpu'``, a callable or a dict leave them on the CPU (where a
            state_dict is copied into the model's own tensors anyway).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file holds anything else (nothing was executed).
    """
    from .mmengine_records import MMENGINE_GLOBALS
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        checkpoint = read_archive(filename, MMENGINE_GLOBALS)
        restore_message_hub(checkpoint)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(
            f'refused to load checkpoint {filename!r}: {err}. {_REFUSED}') from None
    # what resume hands to live objects (meta, scheduler states), as data, before it does
    check_resume_state(checkpoint, filename)
    if isinstance(map_location, (str, torch.device)) and str(map_location) != 'cpu':
        checkpoint = _to_device(checkpoint, torch.device(map_location))
    return checkpoint


def _to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = _to_device(obj[key], device)
        return obj
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_device(v, device) for v in obj)
    return obj


def _log_scalars(checkpoint):
    hub = checkpoint.get('message_hub') if isinstance(checkpoint, dict) else None
    scalars = hub.get('log_scalars') if isinstance(hub, dict) else None
    return scalars if isinstance(scalars, dict) else {}


_HISTORY_DTYPES = (torch.float64, torch.float32, torch.int64)


def restore_message_hub(checkpoint):
    """Turn the plain encoding of :func:`plain_checkpoint` back into ``HistoryBuffer``s,
    checked like pickled ones (in place)."""
    from .mmengine_records import history_buffer
    scalars = _log_scalars(checkpoint)
    for key, value in scalars.items():
        if type(value) is dict and set(value) == set(PLAIN_HISTORY_KEYS):
            arrays = [value[k] for k in PLAIN_HISTORY_KEYS[:2]]
            # (the dtypes plain_checkpoint writes, and that NumPy has: not bfloat16)
            if not all(type(a) is torch.Tensor and a.dtype in _HISTORY_DTYPES for a in arrays):
                raise UnsafeCheckpointError(
                    f'message hub entry {key!r} must hold its histories as float64, float32 '
                    'or int64 tensors, as mmrecprune writes them; got '
                    f'{[getattr(a, "dtype", type(a).__name__) for a in arrays]}')
            scalars[key] = history_buffer(*(a.numpy() for a in arrays), value['max_length'])
    return checkpoint


def plain_checkpoint(checkpoint, logger=None):
    """Make an MMEngine checkpoint dict plain data (in place), so that it loads with plain
    ``torch.load(weights_only=True)``: ``HistoryBuffer`` -> ``{'log_history': tensor,
    'count_history': tensor, 'max_length': int}``, numpy scalars -> Python numbers, numpy
    arrays -> tensors. A message-hub value of any other type is left out with a log line (a
    resumed run needs only the counters and the logged scalars)."""
    from mmengine.logging import HistoryBuffer, print_log
    scalars = _log_scalars(checkpoint)
    for key, buf in list(scalars.items()):
        if isinstance(buf, HistoryBuffer):
            log, count = buf.data
            scalars[key] = dict(log_history=torch.from_numpy(np.asarray(log, np.float64)),
                                count_history=torch.from_numpy(_count_array(count)),
                                max_length=int(buf.max_length))
    hub = checkpoint.get('message_hub')
    if isinstance(hub, dict) and isinstance(hub.get('runtime_info'), dict):
        info = hub['runtime_info']
        for key in list(info):
            value = _plain(info[key])
            if value is _NOT_PLAIN:
                print_log(f'checkpoint: message hub entry {key!r} ({type(info[key]).__name__}) '
                          'is not plain data and is not saved', logger=logger or 'current',
                          level=logging.WARNING)
                del info[key]
            else:
                info[key] = value
    for key, value in list(checkpoint.items()):
        if key != 'message_hub':
            plain = _plain(value)
            if plain is not _NOT_PLAIN:
                checkpoint[key] = plain
    return checkpoint


def _count_array(count):
    count = np.asarray(count)
    return count.astype(np.int64) if count.dtype.kind in 'biu' else count.astype(np.float64)


_NOT_PLAIN = object()


def _plain(obj):
    """``obj`` with numpy values made plain, or ``_NOT_PLAIN`` if it holds other objects."""
    if obj is None or type(obj) in (str, int, float, bool, bytes) or \
            type(obj) in (torch.Tensor, torch.nn.Parameter):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.dtype.kind in 'biuf':
        return torch.from_numpy(np.ascontiguousarray(obj))
    if type(obj) in (dict, OrderedDict):
        items = {k: _plain(v) for k, v in obj.items()}
        if any(v is _NOT_PLAIN for v in items.values()):
            return _NOT_PLAIN
        if type(obj) is dict:
            return items
        obj.update(items)  # keeps the OrderedDict and its _metadata
        return obj
    if type(obj) in (list, tuple):
        items = [_plain(v) for v in obj]
        return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items) else type(obj)(items)
    return _NOT_PLAIN


def route_mmengine_loading():
    """Route MMEngine's local checkpoint loading (runner resume / load_from, ``Pretrained``
    init, ``load_checkpoint`` in mmdet / mmseg APIs) through :func:`load_mmengine_checkpoint`."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_as_data, force=True)


def load_from_local_as_data(filename, map_location=None):
    """:func:`load_mmengine_checkpoint` under the name MMEngine logs ("Loads checkpoint by
    local_as_data backend": it prints the loader's name after ``load_from_``)."""
    return load_mmengine_checkpoint(filename, map_location)
