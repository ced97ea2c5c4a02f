from .lottery import LotteryTicketPruner
from .psap import (L1GlobalPruner, L1UniformPruner, PSAPPruner, StructuredPruner,
                   build_structured_pruner)

__all__ = ['LotteryTicketPruner', 'StructuredPruner', 'PSAPPruner', 'L1UniformPruner',
           'L1GlobalPruner', 'build_structured_pruner']
