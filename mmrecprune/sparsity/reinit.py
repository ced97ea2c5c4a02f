"""Random re-initialisation that keeps only a mask: the ``'reinit'`` rewind mode of the
iterative pruners and the random starting weights of mask transfer (``PrunedBackbone``)."""
import logging
import sys
from contextlib import contextmanager

import torch
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def _quiet_init_logs():
    """Silence MMEngine's current logger, which ``init_weights`` tells the initialiser of every
    tensor. A module with ``init_weights`` comes from MMEngine, so MMEngine is already loaded
    then; the engine imports nothing of it."""
    mmengine_logging = sys.modules.get('mmengine.logging')
    if mmengine_logging is None:
        yield
        return
    logger = mmengine_logging.MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@torch.no_grad()
def reinitialise(module, seed):
    """Random weights for ``module`` from its own ``init_weights`` (MMEngine / OpenMMLab
    modules, e.g. mmdet's ResNet: Kaiming convs, constant norms) or else the layers'
    ``reset_parameters``, and fresh BN statistics; the global RNG is left alone.

    Args:
        module (nn.Module): The module to re-initialise in place.
        seed (int): Seed of the draw: the same seed gives the same weights.
    """
    with _quiet_init_logs(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hasattr(module, 'init_weights'):
            for m in module.modules():
                if hasattr(m, '_is_init'):
                    m._is_init = False  # MMEngine skips modules it has initialised once
            module.init_weights()
        else:
            for m in module.modules():
                if hasattr(m, 'reset_parameters'):
                    m.reset_parameters()
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.reset_running_stats()
