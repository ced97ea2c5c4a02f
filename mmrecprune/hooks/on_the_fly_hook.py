"""Retraining-free pruning at the end of training (on-the-fly pruning and one-shot baselines)."""
import os.path as osp

from mmengine.dist import is_main_process

from mmrecprune.hooks.pruning_hook import PruningHook
from mmrecprune.hooks.rank_sync import synchronized_step
from mmrecprune.methods.base import RetrainingFreePruner
from mmrecprune.registry import HOOKS
from mmrecprune.sparsity import strip_conv_cfg
from mmrecprune.tickets import export_ticket


@HOOKS.register_module()
class OnTheFlyPruningHook(PruningHook):
    """Train with the pruner's penalty (if it has one), prune once after the last epoch with no
    fine-tuning, write ``work_dir/tickets/<method>_p<sparsity>.pth``.

    During training the pruner (default :class:`~mmrecprune.methods.OnTheFlyPruner`) adds its
    gap penalty through the ``PruningOptimWrapper``; the penalty and its coefficient are logged
    every ``log_interval`` iterations (message hub and visualizer, ``pruning/``). After training
    the hook scores the validation set before pruning, right after it (``zero``) and with the
    pruner's recovery (and with BN recalibration on ``bn_recalibration_images`` training images
    if > 0), then exports the ticket (hyperspherical convs folded: an ordinary backbone).

    Args:
        pruner (dict): e.g. ``dict(type='OnTheFlyPruner', sparsity=0.5, penalty=10.0)``.
        evaluate (bool): Score the variants on the validation loader (skipped without one).
            Defaults to True.
        bn_recalibration_images (int): Training images that re-estimate the BN statistics after
            pruning (0: none). The ticket carries the recalibrated statistics. Defaults to 0.
        log_interval (int): Iterations between penalty log entries. Defaults to 50.
        example_input_shape (Sequence[int]): ``(1, C, H, W)`` the ticket's FLOPs are counted
            for. Defaults to ``(1, 3, 224, 224)``.

    The pruner must be a :class:`~mmrecprune.methods.base.RetrainingFreePruner` (another
    family is refused when the hook is built); its penalty is logged where it has one
    (``penalty`` not None).
    """
    state_key = 'onthefly'
    pruner_protocol = RetrainingFreePruner

    def __init__(self, pruner=dict(type='OnTheFlyPruner'), evaluate=True,
                 bn_recalibration_images=0, log_interval=50,
                 example_input_shape=(1, 3, 224, 224)):
        if not isinstance(bn_recalibration_images, int) or bn_recalibration_images < 0:
            raise ValueError('bn_recalibration_images must be an int >= 0, got '
                             f'{bn_recalibration_images!r}')
        if not isinstance(log_interval, int) or log_interval < 1:
            raise ValueError(f'log_interval must be an int >= 1, got {log_interval!r}')
        super().__init__(pruner, example_input_shape)
        self.evaluate = evaluate
        self.bn_recalibration_images = bn_recalibration_images
        self.log_interval = log_interval
        self.scores = {}  # metrics by row (dense, folded, zero, <recovery>, ...) after the cut

    def before_train(self, runner):
        p = self.pruner
        runner.logger.info(
            f'OnTheFlyPruningHook: {type(p).__name__}, {len(p.params)} prunable tensors, '
            f'{sum(t.numel() for t in p.params.values())} weights, sparsity {p.sparsity} at the '
            f'end of training' + (f', penalty {p.penalty} (warm-up {p.warmup_iters} steps, '
                                  f'step {p.iteration} now)' if p.penalty is not None else ''))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        p = self.pruner
        if p.penalty is not None and (runner.iter + 1) % self.log_interval == 0:
            self.publish(runner, dict(gap_penalty=p.last_penalty,
                                      penalty_coefficient=p.coefficient()), {})

    def after_train(self, runner):
        if self.pruner.pruned:  # resumed after the cut
            return
        model, p = self._model(runner), self.pruner
        val_loop = runner.val_loop if runner._val_loop is not None else None
        if self.evaluate and val_loop is None:
            runner.logger.info('OnTheFlyPruningHook: no val_dataloader, pruning unscored')
        scored = self.evaluate and val_loop is not None
        recalibrate = None
        if self.bn_recalibration_images:
            from mmrecprune.analysis import recalibrate_bn
            recalibrate = lambda: recalibrate_bn(  # noqa: E731
                model, runner.train_dataloader, self.bn_recalibration_images)
        gap = {}

        def cut(plan):
            """Carry out rank 0's plan: once per recovery scored (the model ends in the last,
            p.recovery), or once."""
            gap.update(p.statistics_of_gap(plan.masks))  # before the cut, its own masks
            if not scored:
                changed = p.commit(plan)
                if recalibrate is not None:
                    recalibrate()
                return changed
            from mmrecprune.analysis import evaluate, score_pruning
            modes = ['zero', p.recovery] if p.recovery != 'zero' else ['zero']
            self.scores = score_pruning(
                p, lambda: evaluate(model, val_loop.dataloader, val_loop.evaluator), modes,
                recalibrate, plan=lambda: plan)
            for row, metrics in self.scores.items():
                runner.logger.info(f'OnTheFlyPruningHook: {row:>24}: ' + ', '.join(
                    f'{k} {v:.4f}' for k, v in metrics.items()))
            return None  # every weight may have changed

        synchronized_step(p, runner.logger, 'OnTheFlyPruningHook', commit=cut)
        runner.logger.info(
            f'OnTheFlyPruningHook: pruned {p.sparsity:.0%} of every prunable layer, recovery '
            f'{p.recovery}; before the cut the pruned entries averaged '
            f'{gap["pruned_magnitude"]:.3f} and the kept {gap["kept_magnitude"]:.3f} '
            f'(scaled magnitude, gap ratio {gap["gap_ratio"]:.1f})')
        self.publish(runner, dict(sparsity=p.sparsity), dict(gap_ratio=gap['gap_ratio']))
        if is_main_process():
            path = osp.join(runner.work_dir, 'tickets',
                            f'{p.method}_p{round(100 * p.sparsity)}.pth')
            export_ticket(path, p, strip_conv_cfg(runner.cfg.model.backbone),
                          self.example_input_shape, source=runner.cfg.get('load_from'))
            runner.logger.info(f'OnTheFlyPruningHook: ticket saved to {path}')
