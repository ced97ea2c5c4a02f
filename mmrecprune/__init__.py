"""mmrecprune: backbone pruning for the OpenMMLab 2.x ecosystem."""
from .checkpoint_safety import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

# Importing the sub-packages registers every module, so `custom_imports=['mmrecprune']` is enough.
from . import datasets, evaluation, hooks, methods, models, optim, utils  # noqa: E402,F401

__all__ = ['__version__']
