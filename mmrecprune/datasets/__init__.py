"""Data sets and transforms: Fashion-MNIST and ImageNet (registered in ``DATASETS``) and the
classification transforms (``TRANSFORMS``; importing them imports ``mmcv.transforms``, which
registers the ``'mmcv.'`` transforms the configs use). :mod:`.fashion_mnist_io` (the IDX
files) and :mod:`.scenes` (the Fashion-MNIST scenes data set) are plain numpy: they import
without MMEngine or MMCV (``tools/dataset_converters/make_fashion_scenes.py`` prepares data
before either is installed).

As in :mod:`mmrecprune`, a registering module whose OpenMMLab library is not installed at all is
skipped here; using one of its names (``mmrecprune.datasets.PackClsInputs``, or building it
from a config, whose registry imports its module) raises that library's
``ModuleNotFoundError``.
"""
import importlib

from mmrecprune import register_if_installed

from .fashion_mnist_io import FASHION_MNIST_CLASSES, load_fashion_mnist
from .scenes import generate_scenes

#: the registered classes and the modules that register them (they need MMEngine / MMCV)
REGISTERED = dict(FashionMNIST='fashion_mnist', ImageNet='imagenet', PackClsInputs='transforms',
                  RandomResizedCrop='transforms', ResizeEdge='transforms')


def _registered(name):
    return getattr(importlib.import_module(f'{__name__}.{REGISTERED[name]}'), name)


def _register_all():
    for name in REGISTERED:
        globals()[name] = _registered(name)


register_if_installed(_register_all)


def __getattr__(name):
    """A registered class after its registration was skipped above: import its module now, so
    the missing library is named where it is needed."""
    if name in REGISTERED:
        return _registered(name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['FASHION_MNIST_CLASSES', 'load_fashion_mnist', 'generate_scenes', *REGISTERED]
