"""OptimWrapper subclasses: masked updates, protective gradient supervision, penalties."""
from .masked_optim_wrapper import AmpMaskedOptimWrapper, MaskedOptimWrapper, MaskedUpdateMixin
from .protective_optim_wrapper import (AmpProtectiveOptimWrapper, ProtectiveOptimWrapper,
                                       ProtectiveUpdateMixin)
