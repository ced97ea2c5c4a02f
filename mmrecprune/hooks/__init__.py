from .lottery_ticket_hook import LotteryTicketHook
from .on_the_fly_hook import OnTheFlyPruningHook
from .plain_checkpoint_hook import PlainCheckpointHook, with_plain_checkpoints
from .pruning_hook import PruningHook, build_pruner
from .structured_pruning_hook import StructuredPruningHook

__all__ = ['PruningHook', 'build_pruner', 'LotteryTicketHook', 'StructuredPruningHook',
           'OnTheFlyPruningHook', 'PlainCheckpointHook', 'with_plain_checkpoints']
