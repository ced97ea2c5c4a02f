"""Structured pruning steps during training, and a slim ticket at the end (PSAP, L1 baselines)."""
import copy
import os.path as osp

import torch
from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import IterBasedTrainLoop

from mmrecprune.methods.psap import STRUCTURED_PRUNERS, build_structured_pruner, parse_target
from mmrecprune.hooks.rank_sync import broadcast_masks, check_ranks_agree
from mmrecprune.hooks.starting_weights import adapt_starting_weights
from mmrecprune.registry import HOOKS, MODELS
from mmrecprune.sparsity import (apply_channel_structure, count_flops_params, inference_forward,
                                 plot_kept_channels)
from mmrecprune.tickets import clean_backbone_cfg, save_ticket

BACKBONE = 'backbone'


@HOOKS.register_module()
class StructuredPruningHook(Hook):
    """Prune backbone filters in ``num_steps`` steps during training, then export a slim ticket.

    Step k (k = 0 .. num_steps-1) runs at the start of epoch (or iteration)
    ``begin + k * interval`` and soft-prunes channels (zeroed, still trained, restorable) until
    the backbone's cost is ``1 - f * (k+1) / num_steps`` of dense, ``f`` the target fraction. The
    algorithm is one of :data:`~mmrecprune.methods.psap.STRUCTURED_PRUNERS`; the formulas are in
    :mod:`mmrecprune.methods.psap`. The optimizer wrapper must be a ``ProtectiveOptimWrapper``
    (or its AMP variant): it re-zeroes the soft-pruned channels after every step and records the
    gradients that protective restoration needs.

    After training the final mask is hard-applied, a copy of the model is physically slimmed, and
    ``work_dir/tickets/slim.pth`` (a structured ticket for ``mmrecprune.PrunedBackbone``) plus
    ``work_dir/tickets/slim_channels.png`` (kept channels per group) are written. The runner's
    own model keeps its dense shapes (with the pruned channels at zero), so its optimizer and
    checkpoints stay valid; no slimming happens during training.

    Args:
        method (str): ``'psap'`` (Protective Self-Adaptive Pruning), ``'l1_uniform'`` or
            ``'l1_global'``. Defaults to ``'psap'``.
        target (dict): The fraction of the backbone's cost to REMOVE: ``dict(flops=f)``,
            ``dict(params=f)`` or ``dict(channels=f)``, ``f`` in (0, 1). FLOPs are counted for
            one image of ``example_input_shape``. Defaults to ``dict(flops=0.5)``.
        num_steps (int): Number of pruning steps. Defaults to 3.
        interval (int): Epochs (``by_epoch=True``) or iterations between steps. Defaults to 1.
        begin (int): Epoch / iteration of the first step; 0 prunes before any training (from a
            pretrained model), >= 1 trains first (from scratch). Defaults to 0.
        by_epoch (bool): Count ``begin`` / ``interval`` in epochs, else in iterations.
            Defaults to True.
        prune_residual (bool): Also prune the residual streams; block output widths (and so a
            downstream neck's ``in_channels``) change and are logged and stored in the ticket
            as ``out_channels``. Defaults to False (only channels inside residual blocks).
        round_to (int): Kept widths are rounded up to a multiple of this. Defaults to 1.
        min_keep (int): Fewest channels a group keeps. Defaults to 1.
        adaptive (bool, optional): PSAP's sparsity-adaptive per-group ratios (False: uniform
            ratios, an ablation). Only for ``'psap'``. Defaults to None (True for psap).
        protective (bool, optional): Protective restoration of pruned channels whose activation
            gradient stays large. Defaults to None (True for psap, False for the L1 baselines).
        protect_factor (float): Restore when the gradient EMA exceeds this times the median of
            the group's kept channels. Defaults to 1.5.
        grad_momentum (float): EMA factor of the gradient statistics (0.98: about the last 50
            optimizer steps). Defaults to 0.98.
        sparsity_eps (float): PSAP: a weight counts as small below ``eps`` times its layer's mean
            magnitude. Defaults to 0.1.
        ratio_floor (float): PSAP: the part of each group's ratio independent of its sparsity,
            in [0, 1]. Defaults to 0.3.
        example_input_shape (Sequence[int]): ``(1, C, H, W)`` of the input used to trace the
            channel groups and count FLOPs. Defaults to ``(1, 3, 224, 224)``.
    """
    priority = 'LOW'

    def __init__(self, method='psap', target=None, num_steps=3, interval=1, begin=0,
                 by_epoch=True, prune_residual=False, round_to=1, min_keep=1, adaptive=None,
                 protective=None, protect_factor=1.5, grad_momentum=0.98, sparsity_eps=0.1,
                 ratio_floor=0.3, example_input_shape=(1, 3, 224, 224)):
        if method not in STRUCTURED_PRUNERS:
            raise ValueError(f'method must be one of {sorted(STRUCTURED_PRUNERS)}, got '
                             f'{method!r}')
        target = dict(flops=0.5) if target is None else dict(target)
        parse_target(target)
        for name, value, low in (('num_steps', num_steps, 1), ('interval', interval, 1),
                                 ('begin', begin, 0), ('round_to', round_to, 1),
                                 ('min_keep', min_keep, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f'{name} must be an int >= {low}, got {value!r}')
        if adaptive is not None and method != 'psap':
            raise ValueError(f'adaptive applies to method="psap" only, not {method!r}')
        shape = tuple(example_input_shape)
        if len(shape) != 4 or shape[0] != 1 or min(shape) < 1:
            raise ValueError(f'example_input_shape must be (1, C, H, W), got {example_input_shape}')
        self.method = method
        self.target = target
        self.num_steps = num_steps
        self.interval = interval
        self.begin = begin
        self.by_epoch = by_epoch
        self.example_input_shape = shape
        self.pruner_kwargs = dict(
            prune_residual=prune_residual, round_to=round_to, min_keep=min_keep,
            protective=(method == 'psap') if protective is None else bool(protective),
            protect_factor=protect_factor, grad_momentum=grad_momentum)
        if method == 'psap':
            self.pruner_kwargs.update(adaptive=True if adaptive is None else bool(adaptive),
                                      sparsity_eps=sparsity_eps, ratio_floor=ratio_floor)
        self.pruner = None
        self._resumed_state = None

    # -- set-up ---------------------------------------------------------------------------
    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def _example_input(self, model):
        param = next(model.parameters())
        generator = torch.Generator().manual_seed(0)  # leaves the global RNG alone
        return torch.randn(self.example_input_shape, generator=generator).to(param.device)

    def before_train(self, runner):
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
        wrapper = runner.optim_wrapper
        if not hasattr(wrapper, 'supervise'):
            raise TypeError('StructuredPruningHook needs optim_wrapper=dict(type='
                            '"mmrecprune.ProtectiveOptimWrapper", ...) (or '
                            '"mmrecprune.AmpProtectiveOptimWrapper") to keep soft-pruned '
                            f'channels at zero; got {type(wrapper).__name__}')
        model = self._model(runner)
        if not hasattr(model, BACKBONE):
            raise TypeError(f'StructuredPruningHook prunes `model.{BACKBONE}`; '
                            f'{type(model).__name__} has none')
        self.pruner = build_structured_pruner(
            self.method, model, self._example_input(model), self.target, self.num_steps,
            scope=BACKBONE, **self.pruner_kwargs)
        if self._resumed_state is not None:
            self.pruner.load_state_dict(self._resumed_state)
            self._resumed_state = None
        wrapper.supervise(self.pruner)
        p = self.pruner
        runner.logger.info(
            f'StructuredPruningHook[{self.method}]: {len(p.groups)} channel groups '
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
        world = get_world_size()
        if p.monitor is not None and world > 1:
            all_reduce(p.monitor.ema, op='mean')  # every rank decides on the same statistics
        plan = p.plan_step()
        # rank 0 decides, the others follow; commit, then prove every rank agrees
        broadcast_masks(plan.masks)
        broadcast_masks(plan.restored)
        changed = p.commit(plan)
        check_ranks_agree(runner.logger, 'StructuredPruningHook', plan.masks,
                          dict(self._model(runner).backbone.named_parameters()),
                          what='channel masks')
        runner.optim_wrapper.reset_state_slices(p.channel_param_slices(changed))
        kept = sum(w for w, _ in p.kept_widths().values())
        total = sum(n for _, n in p.kept_widths().values())
        restored = int(sum(int(m.sum()) for m in plan.restored.values()))
        runner.logger.info(
            f'StructuredPruningHook[{self.method}]: step {plan.step}/{self.num_steps}: '
            f'{p.metric} at {plan.cost / p.dense_cost:.4f} of dense (target '
            f'{plan.target / p.dense_cost:.4f}), {kept}/{total} channels kept, '
            f'{restored} restored')
        runner.message_hub.update_scalar(f'train/{p.metric}_kept', plan.cost / p.dense_cost)

    # -- export ---------------------------------------------------------------------------
    def after_train(self, runner):
        p = self.pruner
        if p is None:
            return
        p.apply_masks()  # hard-apply the final mask on every rank
        if p.step_count < self.num_steps:
            runner.logger.warning(f'StructuredPruningHook: training ended after '
                                  f'{p.step_count}/{self.num_steps} pruning steps; the ticket '
                                  'misses the target')
        if is_main_process():
            self._export(runner)

    def _stage_widths(self, backbone_cfg, structure, x):
        """Output widths of every stage of the (slim) backbone, for a neck's in_channels."""
        cfg = copy.deepcopy(backbone_cfg)
        if 'num_stages' in cfg:
            cfg['out_indices'] = tuple(range(cfg['num_stages']))
        net = MODELS.build(cfg)
        apply_channel_structure(net, structure)
        outs = inference_forward(net, x)
        outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
        return [int(o.shape[1]) for o in outs]

    def _export(self, runner):
        p = self.pruner
        model = self._model(runner)
        slim, structure = p.slim_copy()
        x = self._example_input(model)
        dense_out, slim_out = inference_forward(model, x), inference_forward(slim, x)
        if isinstance(dense_out, torch.Tensor) and not torch.allclose(
                dense_out, slim_out, rtol=1e-4, atol=1e-4):
            raise RuntimeError('the slimmed model does not compute what the masked one does '
                               f'(max diff {(dense_out - slim_out).abs().max():.3g})')
        prefix = BACKBONE + '.'
        backbone_structure = {k[len(prefix):]: v for k, v in structure.items()
                              if k.startswith(prefix)}
        shape = self.example_input_shape
        dense_flops, dense_params = count_flops_params(model.backbone, shape)
        flops, params = count_flops_params(slim.backbone, shape)
        backbone_cfg = clean_backbone_cfg(runner.cfg.model.backbone)
        meta = dict(
            method=self.method, round=p.step_count, steps=p.step_count, target=self.target,
            flops=flops, params=params, flops_dense=dense_flops, params_dense=dense_params,
            flops_ratio=flops / dense_flops, params_ratio=params / dense_params,
            sparsity=1.0 - params / dense_params, input_shape=list(shape),
            kept_channels={n: k for n, (k, _) in p.kept_widths().items()},
            restored=sum(h.get('restored', 0) for h in p.history),
            source=str(runner.cfg.get('load_from')),
            **{k: v for k, v in self.pruner_kwargs.items() if k != 'grad_momentum'})
        if p.prune_residual:
            try:
                meta['out_channels'] = self._stage_widths(backbone_cfg, backbone_structure, x)
                meta['dense_out_channels'] = self._stage_widths(backbone_cfg, {}, x)
                runner.logger.info(
                    f'StructuredPruningHook: residual channels pruned: stage out_channels '
                    f'{meta["dense_out_channels"]} -> {meta["out_channels"]}; set the '
                    'downstream neck / head in_channels to the new widths')
            except Exception as err:  # an exotic backbone: report what we can
                runner.logger.warning(f'StructuredPruningHook: could not measure stage widths '
                                      f'of the slim backbone ({err})')
        folder = osp.join(runner.work_dir, 'tickets')
        path = osp.join(folder, 'slim.pth')
        save_ticket(path, backbone_cfg, slim.backbone.state_dict(),
                    channel_structure=backbone_structure, **meta)
        plot_kept_channels(p.kept_widths(), osp.join(folder, 'slim_channels.png'),
                           title=f'{self.method}: FLOPs {flops / dense_flops:.1%}, params '
                                 f'{params / dense_params:.1%} of dense')
        runner.logger.info(
            f'StructuredPruningHook: slim ticket saved to {path}: FLOPs {dense_flops:,} -> '
            f'{flops:,} ({flops / dense_flops:.1%}), params {dense_params:,} -> {params:,} '
            f'({params / dense_params:.1%})')

    # -- checkpoints ----------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint):
        if self.pruner is not None:
            checkpoint['structured_pruning'] = self.pruner.state_dict()

    def after_load_checkpoint(self, runner, checkpoint):
        # Only a resumed run continues the pruning state; `load_from` alone starts a new run
        # from the checkpoint's weights.
        if getattr(runner, '_resume', False):
            self._resumed_state = checkpoint.get('structured_pruning')
        else:
            adapt_starting_weights(self._model(runner), checkpoint,
                                   f'load_from={runner._load_from}')
