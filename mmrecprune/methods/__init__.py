from .lottery import LotteryTicketPruner

__all__ = ['LotteryTicketPruner']
