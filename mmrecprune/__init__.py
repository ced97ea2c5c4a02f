"""mmrecprune: backbone pruning for the OpenMMLab 2.x ecosystem.

``import mmrecprune`` registers every module (so ``custom_imports=dict(imports=['mmrecprune'])``
is enough) and routes MMEngine's checkpoint loading through the safe reader.

The engine (:mod:`mmrecprune.sparsity`), the ticket format (:mod:`mmrecprune.ticket_schema`,
:mod:`mmrecprune.tickets`), the checkpoint reader (:mod:`mmrecprune.fileio`) and
:mod:`mmrecprune.cli` are plain PyTorch and never import an OpenMMLab library at import time.
Importing one of them imports this package first, so the registration below is skipped when an
OpenMMLab library it needs is not installed at all: the plain-PyTorch modules then import, and
whatever needs the missing library raises its ``ModuleNotFoundError`` when it is used
(``import mmrecprune.models``, ``mmrecprune.hooks``, or building ``type='mmrecprune.X'``, whose
registry imports its module on first use). An OpenMMLab library that is installed but broken,
and every other import error, still raises here.
"""
import importlib

import torch

from .version import __version__

if tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2]) < (2, 0):
    # the safe reader needs Tensor.untyped_storage(); refuse loudly rather than load unsafely
    raise ImportError(f'mmrecprune needs PyTorch >= 2.0 (found {torch.__version__}): its '
                      'checkpoint and ticket loading is only safe there')

#: the libraries the registered modules need and the plain-PyTorch modules do not
OPENMMLAB_PACKAGES = ('mmengine', 'mmcv', 'mmdet', 'mmseg')
#: the sub-packages whose import registers modules (in MMEngine's registries, see ``registry``)
REGISTERING_PACKAGES = ('datasets', 'evaluation', 'hooks', 'methods', 'models', 'optim',
                        'distributed')


def register_if_installed(register):
    """Run ``register()``, skipped when an OpenMMLab library it imports is not installed at all
    (an installed but broken one, and every other import error, still raises)."""
    try:
        register()
    except ModuleNotFoundError as err:
        if err.name not in OPENMMLAB_PACKAGES:
            raise


def _register_all():
    from .fileio import route_mmengine_loading
    route_mmengine_loading()
    for name in REGISTERING_PACKAGES:
        importlib.import_module(f'{__name__}.{name}')


register_if_installed(_register_all)


def __getattr__(name):
    """``mmrecprune.models`` (etc.) after a registration skipped above: import it now, so the
    missing library is named where it is needed."""
    if name in REGISTERING_PACKAGES:
        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['__version__']
