"""BN recalibration: re-estimate every BatchNorm's running statistics on a few batches.

After channels are cut without training, each norm layer downstream of the cut sees a
different mean and variance than the ones it stored, and its outputs drift layer after layer.
Re-estimating the statistics on a few hundred images, with no weight update, removes most of
that drift; it is the cheap standard that retraining-free pruning is measured against
("adaptive BN", Li et al. 2020, EagleEye).

Plain PyTorch: the caller gives the batches and, for models that are not called as
``model(inputs)``, how to run one.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batch_size_of(batch: Any) -> int:
    """Images in ``batch``: the first dim of a tensor, else its length."""
    return int(batch.shape[0]) if isinstance(batch, torch.Tensor) else len(batch)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any],
                          forward: Callable[[nn.Module, Any], Any] | None = None,
                          progress: Callable[[int], None] | None = None) -> int:
    """Re-estimate the running statistics of every ``_BatchNorm`` of ``model`` in place.

    The statistics are reset and replaced by the exact average over all the batches
    (``momentum=None``) of forward passes in which only the norm layers are in training mode
    (dropout and the like stay in eval mode); no gradient is computed and no weight changes.
    Every module's training flag and every norm layer's momentum are restored afterwards.

    Args:
        model (nn.Module): The model.
        batches (Iterable): Model inputs, one batch each (e.g. image tensors ``[N, C, H, W]``).
        forward (callable, optional): ``forward(model, batch)`` runs one batch. Defaults to
            ``model(batch)``.
        progress (callable, optional): Called with the images of every batch done (e.g. a
            progress bar's update).

    Returns:
        int: The images seen.

    Raises:
        ValueError: If the model has no BatchNorm layer or ``batches`` is empty.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        raise ValueError(f'{type(model).__name__} has no BatchNorm layer to recalibrate')
    forward = forward or (lambda m, x: m(x))
    flags = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in norms]
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms if m.track_running_stats]
    for m, _ in flags:
        m.training = False
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same
        m.training = True
    seen = 0
    try:
        for batch in batches:
            forward(model, batch)
            n = batch_size_of(batch)
            seen += n
            if progress is not None:
                progress(n)
        if seen == 0:
            raise ValueError('BN recalibration got no batch')
    except BaseException:
        for m, mean, var, count in saved:  # leave the model as it was given
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
        raise
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
        for m, flag in flags:
            m.training = flag
    return seen

