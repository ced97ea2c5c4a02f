"""StructuredPruningHook with ``slim_during_training=True`` in real MMEngine runs: the runner's
model, optimizer state, EMA model and checkpoints go slim at the cut; ``resume`` after a cut is
bit-identical; the ticket equals the soft-mask run's structure; DDP ranks stay identical."""
import torch
from mmengine.runner import Runner

from mmrecprune.tickets import load_ticket
from tests.conftest import dist_train, tiny_dist_config
from tests.hooks.test_structured_pruning_hook import hook_of, psap_cfg


def slim_cfg(work_dir, slim=True, ema=True, **args):
    """L1-uniform from scratch, cuts at the start of epochs 0 and 1 of 3, an EMA model."""
    args = dict(dict(method='l1_uniform', num_steps=2, max_epochs=3), **args)
    cfg = psap_cfg(work_dir, slim_during_training=slim, **args)
    if ema:
        cfg.custom_hooks.append(dict(type='EMAHook', momentum=0.01))
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    return cfg


def _numel(model):
    return sum(p.numel() for p in model.parameters())


def test_model_optimizer_ema_and_checkpoints_go_slim_at_the_cut(tmp_path):
    runner = Runner.from_cfg(slim_cfg(tmp_path))
    dense = _numel(runner.model)
    runner.train()
    pruner = hook_of(runner).pruner
    assert pruner.step_count == 2 and pruner.slimmed
    slim = _numel(runner.model)
    assert slim < 0.7 * dense
    # every optimizer state tensor has its parameter's (slim) shape
    optimizer = runner.optim_wrapper.optimizer
    for group in optimizer.param_groups:
        for p in group['params']:
            for v in optimizer.state[p].values():
                assert v.ndim == 0 or v.shape == p.shape
    ema = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook').ema_model.module
    assert [p.shape for p in ema.parameters()] == [p.shape for p in runner.model.parameters()]
    # a checkpoint after the first cut (of two) is slim, and says which channels it holds
    ckpt = torch.load(str(tmp_path / 'epoch_1.pth'), map_location='cpu', weights_only=False)
    saved = sum(v.numel() for k, v in ckpt['state_dict'].items() if 'num_batches' not in k)
    buffers = sum(b.numel() for n, b in runner.model.named_buffers() if 'num_batches' not in n)
    assert slim + buffers < saved < dense + buffers
    assert ckpt['structured_pruning']['present']
    meta = load_ticket(str(tmp_path / 'tickets' / 'slim.pth')).meta
    assert meta['flops_ratio'] <= 0.5
    assert meta['flops_dense'] > 1.9 * meta['flops']


def test_slim_run_exports_the_soft_mask_runs_channels(tmp_path):
    """Same seed, same data: the L1 slim run keeps the soft-mask run's channels."""
    runs = {}
    for slim in (False, True):
        runner = Runner.from_cfg(slim_cfg(tmp_path / str(slim), slim=slim, ema=False,
                                          max_epochs=2))
        runner.train()
        runs[slim] = hook_of(runner).pruner
    for name, mask in runs[False].masks.items():
        assert torch.equal(mask, runs[True].masks[name]), name
    soft = load_ticket(str(tmp_path / 'False' / 'tickets' / 'slim.pth'))
    slim = load_ticket(str(tmp_path / 'True' / 'tickets' / 'slim.pth'))
    assert soft.channel_structure == slim.channel_structure
    assert (soft.meta['flops'], soft.meta['params']) == (slim.meta['flops'], slim.meta['params'])


def test_resume_after_a_cut_is_bit_identical(tmp_path):
    full = Runner.from_cfg(slim_cfg(tmp_path / 'full'))
    full.train()
    cfg = slim_cfg(tmp_path / 'resumed')
    cfg.resume = True
    cfg.load_from = str(tmp_path / 'full' / 'epoch_1.pth')  # after the first of two cuts
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    a, b = hook_of(full).pruner, hook_of(resumed).pruner
    assert a.history == b.history and b.slimmed
    for name in a.masks:
        assert torch.equal(a.masks[name], b.masks[name]), name
        assert torch.equal(a.soft.present[name], b.soft.present[name]), name
    for (n, x), y in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(x, y), n
    ema = [next(h for h in r.hooks if type(h).__name__ == 'EMAHook').ema_model
           for r in (full, resumed)]
    for (n, x), y in zip(ema[0].state_dict().items(), ema[1].state_dict().values()):
        assert torch.equal(x, y), n
    opt = [r.optim_wrapper.optimizer for r in (full, resumed)]
    for p, q in zip(opt[0].param_groups[0]['params'], opt[1].param_groups[0]['params']):
        for key, value in opt[0].state[p].items():
            assert torch.equal(value, opt[1].state[q][key])


def test_dist_train_keeps_identical_slim_models_on_every_rank(tmp_path):
    config = tiny_dist_config(
        tmp_path / 'l1_slim_tiny.py', 'configs/l1/l1-uniform_r18-w16_1xb128-4e_fashionmnist.py', """
custom_imports = dict(imports=['mmrecprune', 'tests.hooks.slim_probe'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='StructuredPruningHook', interval=1, example_input_shape=(1, 3, 32, 32),
                     pruner=dict(type='L1UniformPruner', target=dict(flops=0.5), num_steps=2,
                                 slim_during_training=True)),
                dict(type='SlimModelProbeHook')]
param_scheduler = []
train_cfg = dict(max_epochs=3, val_interval=3)
""")
    log = dist_train(config, tmp_path / 'work')
    assert log.count('slim channels identical on 2 ranks (weights too)') == 2, log[-3000:]
    assert log.count('slimmed during training') >= 2
    # a further epoch trains the slim model through the rebuilt DDP wrapper
    assert 'slim probe: parameters identical' in log, log[-3000:]
    meta = load_ticket(str(tmp_path / 'work' / 'tickets' / 'slim.pth')).meta
    assert meta['flops_ratio'] <= 0.5 and meta['step'] == 2
