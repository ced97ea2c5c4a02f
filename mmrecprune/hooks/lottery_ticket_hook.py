"""Rounds of train -> prune -> rewind, with a ticket saved after every round."""
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmrecprune.methods import LotteryTicketPruner
from mmrecprune.hooks.rank_sync import broadcast_masks, check_ranks_agree
from mmrecprune.hooks.starting_weights import adapt_starting_weights
from mmrecprune.registry import HOOKS
from mmrecprune.sparsity import plot_layer_sparsity, sparsity_report
from mmrecprune.tickets import save_ticket

BACKBONE_PREFIX = 'backbone.'


@HOOKS.register_module()
class LotteryTicketHook(Hook):
    """Iterative magnitude pruning with rewinding (RecPrune, IMP, self-supervised IMP).

    Training runs ``rounds * epochs_per_round`` epochs. After every ``epochs_per_round``
    epochs the hook removes ``prune_ratio`` of the surviving prunable weights globally by
    magnitude, rewinds the survivors (and the rest of the model) to the rewind target, resets
    the optimizer state (and the LR schedule if asked), and writes
    ``work_dir/tickets/round_{r}.pth`` plus a per-layer sparsity PNG. The optimizer wrapper
    must be a ``MaskedOptimWrapper`` so the pruned weights stay zero between rounds.

    Args:
        rounds (int): number of pruning rounds k; final sparsity ``1 - (1 - p)^k``.
        epochs_per_round (int): training epochs E before each pruning step.
        prune_ratio (float): p, fraction of the surviving weights pruned per round. Default 0.2.
        rewind_to (str): ``'pretrained'`` (weights at the start of training, i.e. ``load_from``),
            ``'iteration'`` (weights after ``rewind_iter`` iterations of round 1: late
            resetting) or ``'none'``. Defaults to ``'pretrained'``.
        rewind_iter (int): iteration for ``rewind_to='iteration'``. Defaults to 0.
        reset_lr (bool): restart the parameter schedulers at every round. Defaults to False.
        include / exclude (Sequence[str]): prunable conv weights (fnmatch on parameter names).
            Defaults: backbone convs except the stem.
        method (str): name written into the tickets. Defaults to ``'imp'``.
    """
    priority = 'LOW'  # after the param scheduler, before the checkpoint hook (VERY_LOW)

    def __init__(self, rounds, epochs_per_round, prune_ratio=0.2, rewind_to='pretrained',
                 rewind_iter=0, reset_lr=False, include=('backbone.*', ),
                 exclude=('conv1.*', 'stem.*'), method='imp'):
        if not isinstance(rounds, int) or not 1 <= rounds <= 30:
            raise ValueError(f'rounds must be an int in [1, 30], got {rounds!r}')
        if not isinstance(epochs_per_round, int) or epochs_per_round < 1:
            raise ValueError(f'epochs_per_round must be an int >= 1, got {epochs_per_round!r}')
        if not 0.0 < prune_ratio < 1.0:
            raise ValueError(f'prune_ratio must be in (0, 1), got {prune_ratio}')
        if rewind_iter < 0:
            raise ValueError(f'rewind_iter must be >= 0, got {rewind_iter}')
        self.rounds = rounds
        self.epochs_per_round = epochs_per_round
        self.prune_ratio = prune_ratio
        self.rewind_to = rewind_to
        self.rewind_iter = rewind_iter
        self.reset_lr = reset_lr
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.method = method
        self.pruner = None
        self._resumed_state = None

    # -- set-up ---------------------------------------------------------------------------
    def before_train(self, runner):
        expected = self.rounds * self.epochs_per_round
        if runner.max_epochs != expected:
            raise ValueError(f'train_cfg.max_epochs is {runner.max_epochs}, but rounds x '
                             f'epochs_per_round = {self.rounds} x {self.epochs_per_round} = '
                             f'{expected}; set max_epochs={expected}')
        if not hasattr(runner.optim_wrapper, 'set_masks'):
            raise TypeError('LotteryTicketHook needs optim_wrapper=dict(type='
                            '"mmrecprune.MaskedOptimWrapper", ...) to keep pruned weights zero')
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self.pruner = LotteryTicketPruner(model, self.prune_ratio, self.include, self.exclude,
                                          rewind_to=self.rewind_to)
        # what reset_lr restores; a resumed run takes it from the checkpoint, not from the
        # schedulers' mid-run state
        self._initial_schedulers = [s.state_dict() for s in self._schedulers(runner)]
        self._initial_lrs = [g['lr'] for g in runner.optim_wrapper.param_groups]
        if self._resumed_state is not None:
            self.pruner.load_state_dict(self._resumed_state)
            self._initial_schedulers = self._resumed_state.get('initial_schedulers',
                                                               self._initial_schedulers)
            self._initial_lrs = self._resumed_state.get('initial_lrs', self._initial_lrs)
            self._resumed_state = None
        elif self.rewind_to == 'pretrained' or (self.rewind_to == 'iteration'
                                                and self.rewind_iter == 0):
            self.pruner.snapshot()
        runner.optim_wrapper.set_masks(self.pruner.params, self.pruner.masks)
        runner.logger.info(
            f'LotteryTicketHook: {len(self.pruner.params)} prunable tensors, '
            f'{sum(p.numel() for p in self.pruner.params.values())} weights, round '
            f'{self.pruner.round}/{self.rounds}, sparsity {self.pruner.sparsity:.4f}')

    @staticmethod
    def _schedulers(runner):
        scheds = runner.param_schedulers or []
        return scheds if isinstance(scheds, list) else [s for v in scheds.values() for s in v]

    # -- training events ------------------------------------------------------------------
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if (self.rewind_to == 'iteration' and self.rewind_iter > 0
                and runner.iter + 1 == self.rewind_iter and self.pruner.rewind_state is None):
            self.pruner.snapshot()
            runner.logger.info(f'LotteryTicketHook: stored rewind weights at iter {runner.iter + 1}')

    def after_train_epoch(self, runner):
        if (runner.epoch + 1) % self.epochs_per_round:
            return
        # rank 0 decides and every rank commits its masks (ranks could differ in float ties)
        masks = self.pruner.commit(broadcast_masks(self.pruner.plan()))
        check_ranks_agree(runner.logger, 'LotteryTicketHook', masks, self.pruner.params)
        runner.optim_wrapper.set_masks(self.pruner.params, masks)
        self._reset_optimizer(runner)
        report = sparsity_report(masks)
        runner.logger.info(f'LotteryTicketHook: round {self.pruner.round}/{self.rounds} '
                           f'sparsity {report["sparsity"]:.4f}')
        runner.message_hub.update_scalar('train/sparsity', report['sparsity'])
        if is_main_process():
            self._export(runner, report)

    def _reset_optimizer(self, runner):
        runner.optim_wrapper.reset_optimizer_state()
        if self.reset_lr:
            for sched, state in zip(self._schedulers(runner), self._initial_schedulers):
                sched.load_state_dict(state)
            for group, lr in zip(runner.optim_wrapper.param_groups, self._initial_lrs):
                group['lr'] = lr

    def _export(self, runner, report):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        backbone = model.backbone
        folder = osp.join(runner.work_dir, 'tickets')
        path = osp.join(folder, f'round_{self.pruner.round}.pth')
        masks = {n[len(BACKBONE_PREFIX):]: m for n, m in self.pruner.masks.items()
                 if n.startswith(BACKBONE_PREFIX)}
        save_ticket(path, runner.cfg.model.backbone, backbone.state_dict(), masks=masks,
                    method=self.method, round=self.pruner.round,
                    sparsity=report['sparsity'], prune_ratio=self.prune_ratio,
                    rewind_to=self.rewind_to, source=str(runner.cfg.get('load_from')),
                    params=report['total'], nonzero_params=report['kept'])
        plot_layer_sparsity(report, osp.join(folder, f'round_{self.pruner.round}_sparsity.png'),
                            title=f'{self.method} round {self.pruner.round}: '
                                  f'{100 * report["sparsity"]:.1f} % sparse')
        runner.logger.info(f'LotteryTicketHook: ticket saved to {path}')

    # -- checkpoints ----------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint):
        if self.pruner is not None:
            checkpoint['lottery_ticket'] = dict(self.pruner.state_dict(),
                                                initial_schedulers=self._initial_schedulers,
                                                initial_lrs=self._initial_lrs)

    def after_load_checkpoint(self, runner, checkpoint):
        # Only a resumed run continues the pruning state; `load_from` a pruning checkpoint
        # starts a new run from its weights.
        if getattr(runner, '_resume', False):
            self._resumed_state = checkpoint.get('lottery_ticket')
        else:
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            adapt_starting_weights(model, checkpoint, f'load_from={runner._load_from}')
