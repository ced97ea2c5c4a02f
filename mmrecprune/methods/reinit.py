"""Random re-initialisation that keeps only a mask: the ``'reinit'`` rewind mode and the random
starting weights of mask transfer."""
import logging

import torch
from mmengine.logging import MMLogger
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def reinitialise(module, seed):
    """Random weights for ``module`` from its own ``init_weights`` (MMEngine / OpenMMLab
    modules, e.g. mmdet's ResNet: Kaiming convs, constant norms) or else the layers'
    ``reset_parameters``, and fresh BN statistics; the global RNG is left alone."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs the initialiser of every tensor
    try:
        with torch.random.fork_rng(devices=[]):
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
    finally:
        logger.setLevel(level)
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.reset_running_stats()
