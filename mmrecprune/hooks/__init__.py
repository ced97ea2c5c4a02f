from .lottery_ticket_hook import LotteryTicketHook

__all__ = ['LotteryTicketHook']
