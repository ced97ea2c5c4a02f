"""The optimizer wrapper that serves a pruner around every optimizer step."""
from .pruning_optim_wrapper import (AmpMaskedOptimWrapper, AmpProtectiveOptimWrapper,
                                    AmpPruningOptimWrapper, MaskedOptimWrapper,
                                    ProtectiveOptimWrapper, PruningOptimWrapper,
                                    PruningUpdateMixin)

__all__ = ['PruningOptimWrapper', 'AmpPruningOptimWrapper', 'PruningUpdateMixin',
           'MaskedOptimWrapper', 'AmpMaskedOptimWrapper', 'ProtectiveOptimWrapper',
           'AmpProtectiveOptimWrapper']
