from .lottery_ticket_hook import LotteryTicketHook

__all__ = ['LotteryTicketHook']
from .structured_pruning_hook import StructuredPruningHook
__all__ += ['StructuredPruningHook']
