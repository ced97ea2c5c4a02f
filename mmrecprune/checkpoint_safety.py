"""Let MMEngine read its own checkpoints with ``torch.load(weights_only=True)``.

PyTorch >= 2.6 loads with ``weights_only=True`` by default and MMEngine 0.10.7 calls
``torch.load`` without overriding it, so ``resume=True`` / ``load_from`` fail on the
message hub's ``HistoryBuffer`` (which also pickles its bound statistics methods through
``getattr``) and the numpy arrays and scalars inside it. Instead of turning the check off, the
local-file loader of MMEngine's ``CheckpointLoader`` is replaced by one that allow-lists exactly
those globals, and only while it loads. ``torch.load`` elsewhere keeps PyTorch's defaults, and
anything else in a checkpoint (a pickle that would run code, say) is still refused.

Allowing ``getattr`` is safe under the weights-only unpickler: it only ever *calls* allow-listed
callables, so an attribute fetched by ``getattr`` can be stored but never invoked.
"""
import builtins
import os.path as osp

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


def _numpy_globals():
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = {type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)}
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtypes]


def mmengine_checkpoint_globals():
    """The non-tensor globals that MMEngine 0.10.x checkpoints contain."""
    return [HistoryBuffer, builtins.getattr, *_numpy_globals()]


def load_mmengine_checkpoint(filename, map_location=None):
    """MMEngine's local-file checkpoint loader, weights-only with the allow-list above."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    with torch.serialization.safe_globals(mmengine_checkpoint_globals()):
        return torch.load(filename, map_location=map_location, weights_only=True)


def allow_mmengine_checkpoints():
    """Route MMEngine's local checkpoint loading (runner resume / load_from, ``Pretrained``
    init) through :func:`load_mmengine_checkpoint`."""
    if hasattr(torch.serialization, 'safe_globals'):  # older PyTorch loads full pickles anyway
        CheckpointLoader.register_scheme(prefixes='', loader=load_mmengine_checkpoint,
                                         force=True)
