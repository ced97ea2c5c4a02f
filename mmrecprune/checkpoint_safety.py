"""Let ``torch.load(weights_only=True)`` read MMEngine's own checkpoints.

PyTorch >= 2.6 loads with ``weights_only=True`` by default and MMEngine 0.10.7 calls
``torch.load`` without overriding it, so ``resume=True`` / ``load_from`` fail on the
message-hub's ``HistoryBuffer`` and the numpy arrays and scalars inside it. Rather than turning
the check off, allow-list exactly the classes and functions MMEngine writes; anything else in a
checkpoint (for example a pickle that would run code) is still refused by PyTorch.
"""
import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_globals():
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = {type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)}
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtypes]


def mmengine_checkpoint_globals():
    """The non-tensor globals that MMEngine 0.10.x checkpoints contain."""
    return [HistoryBuffer, *_numpy_globals()]


def allow_mmengine_checkpoints():
    """Allow-list :func:`mmengine_checkpoint_globals` for ``torch.load(weights_only=True)``."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:  # older PyTorch loads full pickles anyway
        add_safe_globals(mmengine_checkpoint_globals())
