"""Pruners: one module per algorithm, all speaking :class:`~.base.BasePruner`'s protocol and
registered in ``mmrecprune.registry.PRUNERS`` (hooks build them from ``pruner=dict(...)``)."""
from .base import BasePruner, PruningPlan
from .iterative_magnitude import IterativeMagnitudePruner, LotteryTicketPruner
from .l1_baselines import L1GlobalPruner, L1UniformPruner
from .on_the_fly import OneShotMagnitudePruner, OnTheFlyPruner, one_shot_masks
from .post_training import PostTrainingPruner
from .psap import PSAPPruner
from .structured import StructuredPruner

__all__ = ['BasePruner', 'PruningPlan', 'IterativeMagnitudePruner', 'LotteryTicketPruner',
           'StructuredPruner', 'PSAPPruner', 'L1UniformPruner', 'L1GlobalPruner',
           'OneShotMagnitudePruner', 'OnTheFlyPruner', 'one_shot_masks', 'PostTrainingPruner']
