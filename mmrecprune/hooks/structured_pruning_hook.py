"""Structured pruning steps during training, and a slim ticket at the end (PSAP, L1 baselines)."""
import gc
import inspect
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.runner import IterBasedTrainLoop
from torch.nn.parallel import DistributedDataParallel

from mmrecprune.hooks.pruning_hook import PruningHook
from mmrecprune.hooks.rank_sync import check_slim, synchronized_step
from mmrecprune.methods.base import ChannelPruner
from mmrecprune.models.slim_task_model import write_runner_task_model
from mmrecprune.registry import HOOKS
from mmrecprune.tickets import export_ticket

# `method=` of earlier releases -> the registered pruner it names
LEGACY_METHODS = dict(psap='PSAPPruner', l1_uniform='L1UniformPruner',
                      l1_global='L1GlobalPruner')
_PRUNER_ARGS = ('target', 'num_steps', 'prune_residual', 'round_to', 'min_keep', 'adaptive',
                'protective', 'protect_factor', 'grad_momentum', 'sparsity_eps', 'ratio_floor',
                'importance', 'slim_during_training')


def ddp_settings(wrapper):
    """The keyword arguments that build ``wrapper`` (a DDP wrapper) again around its module,
    with no broadcast of parameters or buffers at construction."""
    accepted = inspect.signature(DistributedDataParallel.__init__).parameters
    kwargs = dict(device_ids=wrapper.device_ids, output_device=wrapper.output_device,
                  dim=wrapper.dim, process_group=wrapper.process_group,
                  bucket_cap_mb=wrapper.bucket_bytes_cap / 2**20,
                  find_unused_parameters=wrapper.find_unused_parameters,
                  gradient_as_bucket_view=wrapper.gradient_as_bucket_view,
                  static_graph=wrapper.static_graph, init_sync=False)
    if 'forward_sync_buffers' in accepted:
        kwargs['forward_sync_buffers'] = wrapper.forward_sync_buffers
    else:
        kwargs['broadcast_buffers'] = wrapper.broadcast_buffers
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    if hasattr(wrapper, 'detect_anomalous_params'):  # MMEngine's wrapper
        kwargs['detect_anomalous_params'] = wrapper.detect_anomalous_params
    return kwargs


def reshape_under_ddp(runner, change):
    """Run ``change()`` (which changes parameter shapes of the runner's model) with its DDP
    wrapper, if any, taken down, then wrap the model again with the same settings.

    The wrapper's reducer holds every parameter's gradient accumulator, whose recorded shape
    would refuse the new gradients, and its buckets are sized for the old shapes: it is freed
    before ``change()`` and built anew after it (on every rank together). Returns what
    ``change()`` returns."""
    wrapper = runner.model
    if not isinstance(wrapper, DistributedDataParallel):
        return change()
    cls, module, settings = type(wrapper), wrapper.module, ddp_settings(wrapper)
    wrapper._remove_autograd_hooks()
    for attr in ('logger', 'reducer'):  # both hold the reducer
        if attr in wrapper.__dict__:
            delattr(wrapper, attr)
    runner.model = module
    del wrapper
    gc.collect()
    try:
        return change()
    finally:
        runner.model = cls(module=module, **settings)


@HOOKS.register_module()
class StructuredPruningHook(PruningHook):
    """When structured pruning steps happen during training; a slim ticket at the end.

    Step k (k = 0 .. num_steps-1) runs at the start of epoch (or iteration)
    ``begin + k * interval``: the pruner soft-prunes channels (zeroed, still trained,
    restorable) until the backbone's cost is ``1 - f * (k+1) / num_steps`` of dense. The
    algorithm is the pruner's (:class:`~mmrecprune.methods.PSAPPruner`,
    :class:`~mmrecprune.methods.L1UniformPruner`, :class:`~mmrecprune.methods.L1GlobalPruner`);
    the optimizer wrapper must be a ``PruningOptimWrapper`` (``ProtectiveOptimWrapper`` is the
    same class): it re-zeroes the soft-pruned channels after every step and feeds the
    pruner's gradient statistics.

    After training the final mask is hard-applied, a copy of the model is physically slimmed, and
    ``work_dir/tickets/slim.pth`` (a structured ticket for ``mmrecprune.PrunedBackbone``) plus
    ``work_dir/tickets/slim_channels.png`` are written. The runner's own model keeps its dense
    shapes (with the pruned channels at zero), so its optimizer and checkpoints stay valid.

    Slimming during training (the pruner's ``slim_during_training=True``): right after a step
    whose pruned channels cannot come back (every step without protective restoration, the
    last one with it), the pruner removes them from the runner's model in place; the
    optimizer's state is sliced along (parameter objects, parameter groups, learning rates and
    the schedulers stay), every ``EMAHook``'s EMA model is slimmed alike, and a DDP wrapper is
    rebuilt around the slim model on every rank (which then prove they hold the same channels
    and weights). Checkpoints hold the slim model and the channels it kept (the pruner state's
    ``present``); a resumed run slims its freshly built model (and EMA model) to them in
    ``after_load_checkpoint``, before the weights, optimizer state and EMA weights load. So that
    this happens before ``EMAHook`` loads its slim EMA weights, the hook then runs at priority
    ``'ABOVE_NORMAL'`` (instead of ``'LOW'``) unless the config gives one.

    Args:
        pruner (dict): The pruner, e.g. ``dict(type='PSAPPruner', target=dict(flops=0.5),
            num_steps=3)``; its ``num_steps`` is the number of steps scheduled here. Without it,
            ``method='psap' | 'l1_uniform' | 'l1_global'`` and the pruner's arguments given to
            the hook (the form of earlier releases) build it.
        interval (int): Epochs (``by_epoch=True``) or iterations between steps. Defaults to 1.
        begin (int): Epoch / iteration of the first step; 0 prunes before any training (from a
            pretrained model), >= 1 trains first. Defaults to 0.
        by_epoch (bool): Count ``begin`` / ``interval`` in epochs, else in iterations.
            Defaults to True.
        example_input_shape (Sequence[int]): ``(1, C, H, W)`` of the input used to trace the
            channel groups and count FLOPs. Defaults to ``(1, 3, 224, 224)``.

    The pruner must be a :class:`~mmrecprune.methods.base.ChannelPruner` (another family is
    refused when the hook is built).
    """
    state_key = 'structured_pruning'
    pruner_protocol = ChannelPruner

    def __init__(self, pruner=None, interval=1, begin=0, by_epoch=True,
                 example_input_shape=(1, 3, 224, 224), method=None, **pruner_args):
        unknown = sorted(set(pruner_args) - set(_PRUNER_ARGS))
        if unknown:
            raise TypeError(f'StructuredPruningHook got unexpected arguments {unknown}')
        if pruner is not None and (pruner_args or method is not None):
            raise ValueError('StructuredPruningHook: give the method and its arguments inside '
                             '`pruner=dict(type=...)`, not next to it')
        if pruner is None:
            method = 'psap' if method is None else method
            if method not in LEGACY_METHODS:
                raise ValueError(f'method must be one of {sorted(LEGACY_METHODS)}, got '
                                 f'{method!r}')
            pruner = dict(type=LEGACY_METHODS[method], **pruner_args)
        for name, value, low in (('interval', interval, 1), ('begin', begin, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f'{name} must be an int >= {low}, got {value!r}')
        super().__init__(pruner, example_input_shape)
        self.interval = interval
        self.begin = begin
        self.by_epoch = by_epoch
        self.num_steps = self.pruner.num_steps
        if self.pruner.slim_during_training:
            self.priority = 'ABOVE_NORMAL'  # slim the model before EMAHook loads a checkpoint

    def check_schedule(self, runner):
        last = self.begin + (self.num_steps - 1) * self.interval
        if self.by_epoch:
            if isinstance(runner.train_loop, IterBasedTrainLoop):
                raise ValueError('StructuredPruningHook(by_epoch=True) in an iteration-based '
                                 'loop; set by_epoch=False and give begin / interval in iters')
            length, unit, at = runner.max_epochs, 'max_epochs', 'epoch'
        else:
            length, unit, at = runner.max_iters, 'max_iters', 'iter'
        if last >= length:
            raise ValueError(f'the last pruning step would run at {at} '
                             f'begin + (num_steps - 1) x interval = {self.begin} + '
                             f'{self.num_steps - 1} x {self.interval} = {last}, but training '
                             f'stops at {unit}={length}; set {unit} > {last} (and leave time '
                             'to fine-tune after it)')

    def before_train(self, runner):
        p = self.pruner
        if p.slimmed:  # resumed slim: the weights loaded since, so the ranks can compare them
            self._check_slim_ranks(runner)
        runner.logger.info(
            f'StructuredPruningHook[{p.method}]: {len(p.groups)} channel groups '
            f'({sum(g.num_channels for g in p.groups)} channels), dense {p.metric} '
            f'{p.dense_cost:,}, removing {p.fraction:.0%} in {self.num_steps} steps; '
            f'step {p.step_count}/{self.num_steps} done')

    # -- training events ------------------------------------------------------------------
    def _due(self, now):
        return (self.pruner.step_count < self.num_steps
                and now >= self.begin + self.pruner.step_count * self.interval)

    def before_train_epoch(self, runner):
        if self.by_epoch:
            while self._due(runner.epoch):
                self._prune_step(runner)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if not self.by_epoch:
            while self._due(runner.iter):
                self._prune_step(runner)

    def _prune_step(self, runner):
        p = self.pruner
        plan, changed = synchronized_step(p, runner.logger, 'StructuredPruningHook')
        runner.optim_wrapper.reset_state(p.optimizer_slices(changed))
        if p.can_slim:
            self._slim(runner)
        kept = sum(w for w, _ in p.kept_widths().values())
        total = sum(n for _, n in p.kept_widths().values())
        restored = int(sum(int(m.sum()) for m in plan.restored.values()))
        runner.logger.info(
            f'StructuredPruningHook[{p.method}]: step {plan.step}/{self.num_steps}: '
            f'{p.metric} at {plan.cost / p.dense_cost:.4f} of dense (target '
            f'{plan.target / p.dense_cost:.4f}), {kept}/{total} channels kept, '
            f'{restored} restored')
        kept_costs = {f'{m}_kept': p.cost(metric=m) / p.cost_model.dense(m)
                      for m in ('flops', 'params', 'channels')}
        self.publish(runner, {f'{p.metric}_kept': kept_costs[f'{p.metric}_kept']},
                     dict(kept_costs, restored=restored,
                          **{f'group_kept/{n}': k / d for n, (k, d) in p.kept_widths().items()}))

    # -- slimming during training -----------------------------------------------------------
    @staticmethod
    def _model_copies(runner):
        """Copies of the model that follow its shapes: every EMAHook's EMA model."""
        return [h.ema_model.module for h in runner.hooks
                if getattr(getattr(h, 'ema_model', None), 'module', None) is not None]

    def _slim(self, runner):
        p = self.pruner
        before = sum(t.numel() for t in p.model.parameters())
        optimizers, copies = [runner.optim_wrapper.optimizer], self._model_copies(runner)
        removed = reshape_under_ddp(runner, lambda: p.slim(optimizers, copies))
        if not removed:
            return
        after = sum(t.numel() for t in p.model.parameters())
        runner.logger.info(
            f'StructuredPruningHook[{p.method}]: slimmed during training: '
            f'{sum(removed.values())} channels of {len(removed)} groups removed from the model, '
            f'its parameters {before:,} -> {after:,}')
        self._check_slim_ranks(runner)

    def _check_slim_ranks(self, runner):
        check_slim(self.pruner, runner.logger, 'StructuredPruningHook')

    def load_resumed_state(self, runner, state):
        if not isinstance(state, dict) or not state.get('present'):
            return super().load_resumed_state(runner, state)  # (the pruner refuses a non-dict)
        # the checkpoint holds a model slimmed during training: loading the state slims this
        # (dense, freshly built) model to the saved channels, before the runner loads the slim
        # weights into it; its EMA copies and its DDP wrapper follow

        def load_and_slim():
            self.pruner.load_state_dict(state)
            for model in self._model_copies(runner):
                self.pruner.slim_like(model)

        reshape_under_ddp(runner, load_and_slim)
        runner.logger.info(f'StructuredPruningHook: resumed a model slimmed during training '
                           f'({len(state["present"])} groups slimmed)')

    # -- export ---------------------------------------------------------------------------
    def after_train(self, runner):
        p = self.pruner
        if p.model is None:
            return
        p.finish()  # hard-apply the final mask on every rank
        if p.step_count < self.num_steps:
            runner.logger.warning(f'StructuredPruningHook: training ended after '
                                  f'{p.step_count}/{self.num_steps} pruning steps; the ticket '
                                  'misses the target')
        if not is_main_process():
            return
        path = osp.join(runner.work_dir, 'tickets', 'slim.pth')
        meta = export_ticket(path, p, runner.cfg.model.backbone, self.example_input_shape,
                             source=runner.cfg.get('load_from'))
        if 'out_channels' in meta:
            runner.logger.info(
                f'StructuredPruningHook: residual channels pruned: stage out_channels '
                f'{meta["dense_out_channels"]} -> {meta["out_channels"]}; set the downstream '
                'neck / head in_channels to the new widths')
        runner.logger.info(
            f'StructuredPruningHook: slim ticket saved to {path}: FLOPs '
            f'{meta["flops_dense"]:,} -> {meta["flops"]:,} ({meta["flops_ratio"]:.1%}), params '
            f'{meta["params_dense"]:,} -> {meta["params"]:,} ({meta["params_ratio"]:.1%})')
        # in an mmdet / mmseg config: the slim detector / segmentor and its config beside it
        write_runner_task_model(runner, p, path, self.example_input_shape)
