"""mmrecprune: backbone pruning for the OpenMMLab 2.x ecosystem."""
import torch

from .version import __version__

if tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2]) < (2, 0):
    # the safe reader needs Tensor.untyped_storage(); refuse loudly rather than load unsafely
    raise ImportError(f'mmrecprune needs PyTorch >= 2.0 (found {torch.__version__}): its '
                      'checkpoint and ticket loading is only safe there')

from .fileio import route_mmengine_loading  # noqa: E402

route_mmengine_loading()

# Importing the sub-packages registers every module, so `custom_imports=['mmrecprune']` is enough.
from . import datasets, evaluation, hooks, methods, models, optim, utils  # noqa: E402,F401

__all__ = ['__version__']
