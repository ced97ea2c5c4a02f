"""The GPU check's CUDA sections: training under AMP (``amp``: ``tools/train.py --amp``;
``retinanet``: mmdet's RetinaNet on ticket backbones under ``AmpOptimWrapper``) and DDP
(``ddp``: ``tools/dist_train.sh`` on NCCL), each with the checks that masks, fills and frozen
stages hold in what was trained."""
import contextlib
import os
import os.path as osp
import sys

import torch

from .repo_runs import (IMP_CONFIG, TWO_IMP_ROUNDS, checkpoint_state, run_repo_tool,
                        tiny_config)

RETINANET_STEPS = 3  # optimizer steps per ticket and AMP dtype


def masks_hold(state, ticket, prefix='backbone.'):
    """``(pruned entries hold exactly 0 / their fill, kept entries moved somewhere)``."""
    exact, moved = True, 0
    for name, mask in ticket.masks.items():
        weight = state[prefix + name].float()
        fill = ticket.fill_values.get(name)
        expected = torch.zeros_like(weight) if fill is None else \
            torch.broadcast_to(fill.float(), weight.shape)
        exact &= bool(torch.equal(weight[~mask], expected[~mask]))
        moved += int((weight[mask] != ticket.state_dict[name].float()[mask]).sum())
    return exact, moved > 0


def frozen_unchanged(state, ticket, prefixes=('conv1.', 'bn1.', 'layer1.'), prefix='backbone.'):
    """Whether the frozen stages' weights (stem and stage 1) equal the ticket's."""
    names = [n for n in ticket.state_dict if n.startswith(prefixes)
             and ticket.state_dict[n].is_floating_point() and 'num_batches' not in n
             and 'running_' not in n]
    return bool(names) and all(torch.equal(state[prefix + n].float(),
                                           ticket.state_dict[n].float()) for n in names)


def amp_section(entry, args, work, env):
    """``tools/train.py --amp``: a ticket classifier (fills, frozen stage 1) per AMP dtype and
    an IMP pruning run (fp16)."""
    from mmrecprune.testing.sources import ONE_SHOT_70_FILLED, export_test_ticket
    from mmrecprune.tickets import load_ticket
    ticket_path = export_test_ticket(
        osp.join(work, 'filled_r18.pth'),
        dict(type='mmdet.ResNet', depth=18, base_channels=16, out_indices=[3]),
        ONE_SHOT_70_FILLED, input_shape=(1, 3, 32, 32))
    ticket = load_ticket(ticket_path)
    config = tiny_config(work, 'ticket_cls.py',
                         'configs/selfsup/label-retrain_r18-w16-ticket_fashionmnist.py', f"""
model = dict(backbone=dict(_delete_=True, type='mmrecprune.PrunedBackbone',
                           ticket={ticket_path!r}, out_indices=(3, ), frozen_stages=1))
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = []
""")
    for name in args.amp_dtypes:
        run = osp.join(work, f'ticket_{name}')
        run_repo_tool([sys.executable, 'tools/train.py', config, '--amp', '--work-dir', run,
                  '--cfg-options', f'optim_wrapper.dtype={name}'], env,
                 osp.join(work, f'ticket_{name}.log'))
        state, ckpt = checkpoint_state(osp.join(run, 'epoch_1.pth'))
        exact, moved = masks_hold(state, ticket)
        entry['checks'][f'ticket_{name}_fills_exact'] = exact
        entry['checks'][f'ticket_{name}_kept_weights_trained'] = moved
        entry['checks'][f'ticket_{name}_frozen_stages_unchanged'] = frozen_unchanged(state,
                                                                                     ticket)
        entry['figures'][f'ticket_{name}_optimizer_keys'] = sorted(ckpt.get('optimizer', {}))
    config = tiny_config(work, 'imp_amp.py', IMP_CONFIG, TWO_IMP_ROUNDS)
    run = osp.join(work, 'imp_amp')
    run_repo_tool([sys.executable, 'tools/train.py', config, '--amp', '--work-dir', run], env,
                  osp.join(work, 'imp_amp.log'))
    ticket = load_ticket(osp.join(run, 'tickets', 'round_2.pth'))
    state, ckpt = checkpoint_state(osp.join(run, 'epoch_2.pth'))
    exact = all(not state['backbone.' + n][~m].any() for n, m in ticket.masks.items())
    entry['checks']['imp_amp_pruned_entries_zero'] = exact
    entry['checks']['imp_amp_sparsity_0.36'] = abs(ticket.meta['sparsity'] - 0.36) < 1e-3
    # AmpOptimWrapper (and so AmpPruningOptimWrapper) saves its loss scaler's state
    entry['checks']['imp_amp_loss_scaler_saved'] = 'loss_scaler' in ckpt.get('optimizer', {})
    entry['notes'].append('classifier: a ResNet-18-w16 ticket, 70 % pruned with non-zero fill '
                          'values, frozen_stages=1; IMP: 2 rounds of 20 %, tools/train.py --amp')


def pure_pytorch_focal_loss():
    """If mmcv was built without its ops (``MMCV_WITH_OPS=0``; gpu_check.sh's stub ``_ext``),
    a context that swaps mmdet's CUDA focal loss for mmdet's own PyTorch version (the one it
    uses on the CPU); otherwise a context that does nothing. Returns ``(context, note)``."""
    import mmcv
    ext = sys.modules.get('mmcv._ext')
    if ext is None:
        try:
            import mmcv._ext as ext  # noqa: F811
        except ImportError:
            ext = None
    if ext is not None and not getattr(ext, 'GPU_CHECK_STUB', False):
        return contextlib.nullcontext(), None
    import torch.nn.functional as F
    from mmdet.models.losses import focal_loss

    def sigmoid_focal_loss(pred, target, weight=None, gamma=2.0, alpha=0.25,
                           reduction='mean', avg_factor=None):
        one_hot = F.one_hot(target, num_classes=pred.size(1) + 1)[:, :pred.size(1)]
        return focal_loss.py_sigmoid_focal_loss(pred, one_hot.type_as(pred), weight, gamma,
                                                alpha, reduction, avg_factor)

    @contextlib.contextmanager
    def patched():
        original = focal_loss.sigmoid_focal_loss
        focal_loss.sigmoid_focal_loss = sigmoid_focal_loss
        try:
            yield
        finally:
            focal_loss.sigmoid_focal_loss = original

    return patched(), (f'mmcv {mmcv.__version__} without ops: the focal loss ran as mmdet\'s '
                       'PyTorch version (py_sigmoid_focal_loss)')


def retinanet_section(entry, args, work, device):
    """mmdet's shipped RetinaNet, backbone replaced by R50 tickets, steps under AMP."""
    import mmdet
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import AmpOptimWrapper
    from mmengine.registry import DefaultScope
    from mmdet.testing import demo_mm_inputs

    from mmrecprune.registry import MODELS
    from mmrecprune.testing.sources import ONE_SHOT_70_FILLED, export_test_ticket
    from mmrecprune.tickets import load_ticket
    base = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'retinanet',
                    'retinanet_r50_fpn_1x_coco.py')
    r50 = dict(type='mmdet.ResNet', depth=50, out_indices=[3])
    tickets = dict(
        filled=export_test_ticket(osp.join(work, 'filled_r50.pth'), r50, ONE_SHOT_70_FILLED),
        nm=export_test_ticket(osp.join(work, 'nm_r50.pth'), r50,
                              dict(type='OneShotMagnitudePruner', pattern='2:4',
                                   include=('*', ), exclude=('conv1.*', ))))
    context, note = pure_pytorch_focal_loss()
    if note:
        entry['notes'].append(note)
    # a context, not init_default_scope: the process's default scope is left as it was
    with DefaultScope.overwrite_default_scope('mmdet'):
        for kind, path in tickets.items():
            ticket = load_ticket(path)
            for name in args.amp_dtypes:
                cfg = Config.fromfile(base)
                cfg.model.backbone = dict(type='mmrecprune.PrunedBackbone', ticket=path,
                                          out_indices=(0, 1, 2, 3), frozen_stages=1,
                                          norm_eval=True)
                model = revert_sync_batchnorm(MODELS.build(cfg.model)).to(device)
                model.init_weights()
                model.train()
                optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                            lr=0.01, momentum=0.9, weight_decay=1e-4)
                wrapper = AmpOptimWrapper(optimizer=optimizer, dtype=name)
                losses = []
                for step in range(RETINANET_STEPS):
                    packed = demo_mm_inputs(2, [(3, 128, 128)] * 2, num_items=[3, 2],
                                            num_classes=80)
                    data = model.data_preprocessor(packed, True)
                    with wrapper.optim_context(model), context:
                        loss, _ = model.parse_losses(model(**data, mode='loss'))
                    wrapper.update_params(loss)
                    losses.append(float(loss))
                state = {f'backbone.{k}': v.detach().cpu()
                         for k, v in model.backbone.state_dict().items()}
                exact, moved = masks_hold(state, ticket)
                entry['checks'][f'{kind}_{name}_masks_exact'] = exact
                entry['checks'][f'{kind}_{name}_kept_weights_trained'] = moved
                entry['checks'][f'{kind}_{name}_frozen_stages_unchanged'] = frozen_unchanged(
                    state, ticket)
                entry['checks'][f'{kind}_{name}_losses_finite'] = all(
                    map(lambda v: v == v and abs(v) != float('inf'), losses))
                entry['figures'][f'{kind}_{name}_losses'] = losses
                if kind == 'nm':
                    from mmrecprune.sparsity import nm_violations
                    entry['checks'][f'nm_{name}_still_2to4'] = not nm_violations(
                        {n: state['backbone.' + n] != 0 for n in ticket.masks}, '2:4')


def ddp_section(entry, args, work, env):
    """``tools/dist_train.sh CONFIG 1``: NCCL, one process, two IMP rounds through the hooks'
    DDP path."""
    from mmrecprune.tickets import load_ticket
    config = tiny_config(work, 'imp_ddp.py', IMP_CONFIG, TWO_IMP_ROUNDS)
    run = osp.join(work, 'ddp')
    env = dict(env, PORT=str(29500 + os.getpid() % 1000))
    log = run_repo_tool(['bash', 'tools/dist_train.sh', config, '1', '--work-dir', run], env,
                   osp.join(work, 'ddp.log'))
    ticket = load_ticket(osp.join(run, 'tickets', 'round_2.pth'))
    entry['checks']['ddp_ticket_sparsity_0.36'] = abs(ticket.meta['sparsity'] - 0.36) < 1e-3
    entry['checks']['ddp_launcher_pytorch'] = 'launcher: pytorch' in log or \
        "launcher='pytorch'" in log or 'Distributed training: True' in log
    # NCCL: MMEngine's own process group and DDP wrapper (on a machine without a GPU,
    # tools/train.py starts gloo and wraps with CPUDistributedDataParallel instead)
    entry['checks']['ddp_backend_nccl'] = "'backend': 'nccl'" in log and \
        'CPUDistributedDataParallel' not in log
    entry['notes'].append('world size 1 (one GPU): rank_sync runs its path, but its broadcast '
                          'and the digest comparison return at once; checked here: NCCL '
                          'initialisation, the DDP wrapper, the hooks unwrapping it, tickets')
