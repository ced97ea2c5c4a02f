"""Rounds of train -> prune -> rewind, with a ticket saved after every round."""
import os.path as osp
from collections.abc import Mapping

from mmengine.dist import is_main_process

from mmrecprune.fileio.resume_state import (ResumeStateError, check_learning_rates,
                                            check_scheduler_states)
from mmrecprune.hooks.pruning_hook import PruningHook
from mmrecprune.hooks.rank_sync import synchronized_step
from mmrecprune.methods.base import IterativePruner
from mmrecprune.models.slim_task_model import is_task_model, write_runner_task_model
from mmrecprune.registry import HOOKS
from mmrecprune.sparsity import sparsity_report
from mmrecprune.tickets import export_ticket

# arguments of earlier releases, passed on to the default pruner
_PRUNER_ARGS = ('prune_ratio', 'rewind_to', 'rewind_iter', 'include', 'exclude', 'method',
                'ranking')


@HOOKS.register_module()
class LotteryTicketHook(PruningHook):
    """Iterative pruning with rewinding (RecPrune, IMP, self-supervised IMP): when it happens.

    Training runs ``rounds * epochs_per_round`` epochs (plus ``finetune_epochs``). After every
    ``epochs_per_round`` epochs of the rounds the pruner ends a round (by default
    :class:`~mmrecprune.methods.IterativeMagnitudePruner`: ``prune_ratio`` of the surviving
    weights by global magnitude, survivors rewound), the
    optimizer state is reset (and the LR schedule if asked), and
    ``work_dir/tickets/round_{r}.pth`` plus a per-layer sparsity PNG are written. The optimizer
    wrapper must be a ``PruningOptimWrapper`` (``MaskedOptimWrapper`` is the same class).

    Args:
        rounds (int): Number of pruning rounds k; final sparsity ``1 - (1 - p)^k``.
        epochs_per_round (int): Training epochs E before each pruning step.
        pruner (dict): The pruner, e.g. ``dict(type='IterativeMagnitudePruner',
            prune_ratio=0.2, rewind_to='pretrained', method='recprune')``. Without it, the
            arguments of earlier releases (``prune_ratio``, ``rewind_to``, ``rewind_iter``,
            ``include``, ``exclude``, ``method``) given to the hook build that pruner.
        reset_lr (bool): Restart the parameter schedulers at every round. Defaults to False.
        finetune_epochs (int): Epochs trained after the last round with its mask fixed, so
            training runs ``rounds * epochs_per_round + finetune_epochs`` epochs (in-task
            pruning of a detector: ``rewind_to='none'`` and the detector recovers from the last
            cut). In an mmdet / mmseg run the hook then writes ``tickets/final.pth`` (the
            weights as trained) and the slim task model beside it
            (:mod:`mmrecprune.models.slim_task_model`). Defaults to 0.
        example_input_shape (Sequence[int]): ``(1, C, H, W)`` the tickets' FLOPs are counted
            for. Defaults to ``(1, 3, 224, 224)``.

    The pruner must be an :class:`~mmrecprune.methods.base.IterativePruner` (another family
    is refused when the hook is built).
    """
    state_key = 'lottery_ticket'
    pruner_protocol = IterativePruner

    def __init__(self, rounds, epochs_per_round, pruner=None, reset_lr=False,
                 example_input_shape=(1, 3, 224, 224), finetune_epochs=0, **pruner_args):
        if not isinstance(rounds, int) or not 1 <= rounds <= 30:
            raise ValueError(f'rounds must be an int in [1, 30], got {rounds!r}')
        if not isinstance(epochs_per_round, int) or epochs_per_round < 1:
            raise ValueError(f'epochs_per_round must be an int >= 1, got {epochs_per_round!r}')
        if not isinstance(finetune_epochs, int) or finetune_epochs < 0:
            raise ValueError(f'finetune_epochs must be an int >= 0, got {finetune_epochs!r}')
        unknown = sorted(set(pruner_args) - set(_PRUNER_ARGS))
        if unknown:
            raise TypeError(f'LotteryTicketHook got unexpected arguments {unknown}')
        if pruner is not None and pruner_args:
            raise ValueError(f'LotteryTicketHook: give {sorted(pruner_args)} inside '
                             '`pruner=dict(...)`, not next to it')
        if pruner is None:
            pruner = dict(type='IterativeMagnitudePruner', **pruner_args)
        super().__init__(pruner, example_input_shape)
        self.rounds = rounds
        self.epochs_per_round = epochs_per_round
        self.reset_lr = reset_lr
        self.finetune_epochs = finetune_epochs
        self._initial_schedulers, self._initial_lrs = [], []

    # -- set-up ---------------------------------------------------------------------------
    def check_schedule(self, runner):
        expected = self.rounds * self.epochs_per_round + self.finetune_epochs
        if runner.max_epochs != expected:
            raise ValueError(f'train_cfg.max_epochs is {runner.max_epochs}, but rounds x '
                             f'epochs_per_round = {self.rounds} x {self.epochs_per_round} = '
                             + (f'{self.rounds * self.epochs_per_round}, plus finetune_epochs '
                                f'{self.finetune_epochs} = ' if self.finetune_epochs else '')
                             + f'{expected}; set max_epochs={expected}')
        p = self.pruner
        round_iters = self.epochs_per_round * len(runner.train_dataloader)
        if p.rewind_to == 'iteration' and p.rewind_iter > round_iters:
            raise ValueError(f'rewind_iter={p.rewind_iter} is after the end of round 1 '
                             f'({self.epochs_per_round} epoch(s) x {len(runner.train_dataloader)}'
                             f' iterations = {round_iters}); late resetting rewinds to a point '
                             f'inside the first round: set rewind_iter <= {round_iters}')

    def before_run(self, runner):
        if self.is_training(runner) and self.pruner.model is None:
            # what reset_lr restores: the schedulers and learning rates as built, before a
            # resumed run loads their mid-run state (its checkpoint carries these instead)
            self._initial_schedulers = [s.state_dict() for s in self._schedulers(runner)]
            self._initial_lrs = [g['lr'] for g in runner.optim_wrapper.param_groups]
        super().before_run(runner)

    def before_train(self, runner):
        p = self.pruner
        if p.seed is None:
            p.seed = runner.seed  # 'reinit' draws from the run's seed (a resumed run's too)
        if not self.resumed and p.wants_snapshot_at_start:
            p.snapshot()  # the starting weights (load_from or init) are loaded by now
        runner.logger.info(
            f'LotteryTicketHook: {len(p.params)} prunable tensors, '
            f'{sum(w.numel() for w in p.params.values())} weights, round '
            f'{p.step_count}/{self.rounds}, sparsity {p.sparsity:.4f}')

    def load_resumed_state(self, runner, state):
        # this hook's own entries go into live schedulers and param groups at reset_lr: they
        # are checked like the runner's (and against the run's counts) before anything loads
        schedulers, lrs = self._initial_schedulers, self._initial_lrs
        if isinstance(state, Mapping):  # (anything else: the pruner refuses it)
            where = f'{self.state_key}.'
            schedulers = state.get('initial_schedulers', schedulers)
            lrs = state.get('initial_lrs', lrs)
            check_scheduler_states(schedulers, entry=where + 'initial_schedulers')
            check_learning_rates(lrs, entry=where + 'initial_lrs')
            for entry, saved, live in (
                    ('initial_schedulers', schedulers, self._schedulers(runner)),
                    ('initial_lrs', lrs, runner.optim_wrapper.param_groups)):
                if len(saved) != len(live):
                    raise ResumeStateError(
                        f'resume entry {where}{entry} has {len(saved)} entries, this run has '
                        f'{len(live)} (schedulers / parameter groups); resume from a '
                        'checkpoint written by a run of this config')
            state = {k: v for k, v in state.items()
                     if k not in ('initial_schedulers', 'initial_lrs')}
        self.pruner.load_state_dict(state)
        self._initial_schedulers, self._initial_lrs = list(schedulers), list(lrs)

    def saved_state(self):
        return dict(self.pruner.state_dict(), initial_schedulers=self._initial_schedulers,
                    initial_lrs=self._initial_lrs)

    @staticmethod
    def _schedulers(runner):
        scheds = runner.param_schedulers or []
        return scheds if isinstance(scheds, list) else [s for v in scheds.values() for s in v]

    # -- training events ------------------------------------------------------------------
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        p = self.pruner
        if (p.rewind_to == 'iteration' and p.rewind_iter > 0
                and runner.iter + 1 == p.rewind_iter and p.rewind_state is None):
            p.snapshot()
            runner.logger.info(f'LotteryTicketHook: stored rewind weights at iter {runner.iter + 1}')

    def after_train_epoch(self, runner):
        if ((runner.epoch + 1) % self.epochs_per_round
                or runner.epoch + 1 > self.rounds * self.epochs_per_round):
            return
        _, changed = synchronized_step(self.pruner, runner.logger, 'LotteryTicketHook')
        runner.optim_wrapper.reset_state(self.pruner.optimizer_slices(changed))
        if self.reset_lr:
            for sched, state in zip(self._schedulers(runner), self._initial_schedulers):
                sched.load_state_dict(state)
            for group, lr in zip(runner.optim_wrapper.param_groups, self._initial_lrs):
                group['lr'] = lr
        report = sparsity_report(self.pruner.masks)
        sparsity = report['sparsity']
        runner.logger.info(f'LotteryTicketHook: round {self.pruner.step_count}/{self.rounds} '
                           f'sparsity {sparsity:.4f}')
        self.publish(runner, dict(sparsity=sparsity),
                     {f'layer_sparsity/{name}': layer['sparsity']
                      for name, layer in report['layers'].items()})
        if is_main_process():
            path = osp.join(runner.work_dir, 'tickets', f'round_{self.pruner.step_count}.pth')
            export_ticket(path, self.pruner, runner.cfg.model.backbone,
                          self.example_input_shape, source=runner.cfg.get('load_from'))
            runner.logger.info(f'LotteryTicketHook: ticket saved to {path}')

    def after_train(self, runner):
        # in an mmdet / mmseg run: the ticket of the weights as trained, and the slim task model
        if self.pruner.model is None or not is_main_process() \
                or not is_task_model(self._model(runner)):
            return
        path = osp.join(runner.work_dir, 'tickets', 'final.pth')
        export_ticket(path, self.pruner, runner.cfg.model.backbone, self.example_input_shape,
                      source=runner.cfg.get('load_from'))
        runner.logger.info(f'LotteryTicketHook: final ticket (round {self.pruner.step_count}, '
                           f'as trained) saved to {path}')
        write_runner_task_model(runner, self.pruner, path, self.example_input_shape)
