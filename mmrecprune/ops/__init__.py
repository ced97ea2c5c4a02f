"""Compiled CPU kernels, opt-in: the package computes the same things in eager PyTorch without
them.

* :func:`onthefly_functions`: on-the-fly pruning's per-step weight work (the unit-filter
  normalisation, its backward, the gap penalty and its gradient), one C++ call each over all
  convs, for ``OnTheFlyPruner(compiled_ops=True)``.
* :func:`mask_functions`: unstructured masks' weight work (zeroing the pruned entries of all
  masked tensors in one call, the global magnitude selection's pass), for
  ``IterativeMagnitudePruner(compiled_ops=True)`` (IMP, RecPrune, self-supervised pruning).

Built on first use (:mod:`mmrecprune.ops.build`); ``python -m mmrecprune.ops`` builds them
ahead and says whether they work here. Plain PyTorch, no MMEngine.
"""
from .build import CSRC, OpsUnavailable, build_extension
from .masks import MaskFunctions, mask_functions
from .onthefly import OnTheFlyFunctions, compiled_applies, eager_agreement, onthefly_functions

__all__ = [
    'CSRC', 'MaskFunctions', 'OnTheFlyFunctions', 'OpsUnavailable', 'build_extension',
    'compiled_applies', 'eager_agreement', 'mask_functions', 'onthefly_functions'
]
