"""StructuredPruningHook + ProtectiveOptimWrapper in real MMEngine runs: target, ticket, resume."""
import pytest
import torch
from mmengine.runner import Runner

from mmrecprune.hooks import StructuredPruningHook
from mmrecprune.registry import MODELS
from mmrecprune.sparsity import count_flops_params, inference_forward
from mmrecprune.tickets import TicketError, load_ticket, save_ticket
from tests.conftest import STRUCTURED_50, export_test_ticket, tiny_cls_cfg

PSAP = 'configs/psap/psap_r18-w16_1xb128-4e_fashionmnist.py'
SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('pretrain')
    Runner.from_cfg(tiny_cls_cfg(work_dir, max_epochs=1)).train()
    return str(work_dir / 'epoch_1.pth')


SCHEDULE_ARGS = ('interval', 'begin', 'by_epoch', 'example_input_shape')
TYPES = dict(psap='PSAPPruner', l1_uniform='L1UniformPruner', l1_global='L1GlobalPruner')


def psap_cfg(work_dir, load_from=None, max_epochs=3, method=None, **args):
    """The shipped PSAP config, shrunk; ``args`` go to the hook (schedule) or its pruner."""
    cfg = tiny_cls_cfg(work_dir, config=PSAP, max_epochs=max_epochs)
    cfg.load_from = load_from
    cfg.optim_wrapper.optimizer.lr = 0.05
    hook = cfg.custom_hooks[0].to_dict()
    hook.update(example_input_shape=SHAPE, **{k: v for k, v in args.items() if k in SCHEDULE_ARGS})
    hook['pruner'].update({k: v for k, v in args.items() if k not in SCHEDULE_ARGS})
    if method is not None:
        hook['pruner']['type'] = TYPES[method]
    cfg.custom_hooks = [hook]
    return cfg


def hook_of(runner):
    return next(h for h in runner.hooks if isinstance(h, StructuredPruningHook))


def test_pretrained_psap_reaches_flops_target_and_exports_slim_ticket(tmp_path, pretrained):
    runner = Runner.from_cfg(psap_cfg(tmp_path, pretrained))
    runner.train()
    pruner = hook_of(runner).pruner
    assert pruner.step_count == 3
    assert [h['cost'] <= h['target'] for h in pruner.history] == [True] * 3

    ticket = load_ticket(str(tmp_path / 'tickets' / 'slim.pth'))
    meta = ticket.meta
    assert ticket.kind == 'structured' and meta['method'] == 'psap'
    assert 0.45 < meta['flops_ratio'] <= 0.5 and meta['flops'] < meta['flops_dense']
    assert meta['params'] < meta['params_dense'] and meta['input_shape'] == list(SHAPE)
    assert 'init_cfg' not in meta['backbone'] and meta['backbone']['base_channels'] == 8
    assert (tmp_path / 'tickets' / 'slim_channels.png').stat().st_size > 1000

    # the ticket builds the slim backbone, which computes what the soft-masked one computed
    slim = MODELS.build(dict(type='mmrecprune.PrunedBackbone', ticket=str(
        tmp_path / 'tickets' / 'slim.pth'), out_indices=(0, 1, 2, 3)))
    assert count_flops_params(slim, SHAPE) == (meta['flops'], meta['params'])
    x = torch.randn(2, *SHAPE[1:])
    masked = runner.model.backbone
    masked.out_indices = (0, 1, 2, 3)
    for a, b in zip(inference_forward(slim, x), inference_forward(masked, x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_resume_mid_pruning_matches_uninterrupted_run(tmp_path, pretrained):
    # protect_factor 1: restorations happen in a few iterations, so resume must carry them
    hook = dict(protect_factor=1.0, num_steps=3)
    full = Runner.from_cfg(psap_cfg(tmp_path / 'full', pretrained, max_epochs=4, **hook))
    full.train()
    full_pruner = hook_of(full).pruner
    assert full_pruner.history[2]['restored'] > 0  # decided after the resume point

    cfg = psap_cfg(tmp_path / 'resumed', pretrained, max_epochs=4, **hook)
    cfg.resume = True
    cfg.load_from = str(tmp_path / 'full' / 'epoch_2.pth')  # two of three steps done
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    pruner = hook_of(resumed).pruner
    assert pruner.step_count == 3 and pruner.history == full_pruner.history
    for name in full_pruner.masks:
        assert torch.equal(full_pruner.masks[name], pruner.masks[name]), name
        assert torch.equal(full_pruner.protected[name], pruner.protected[name]), name
    torch.testing.assert_close(pruner.monitor.ema, full_pruner.monitor.ema, rtol=0, atol=0)
    for (n, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)


@pytest.mark.parametrize('importance', ['L1', 'L2', 'BNScale', 'Taylor'])
def test_every_importance_criterion_prunes_end_to_end(tmp_path, importance):
    # one epoch of training before the step, so Taylor has gradients to average
    cfg = psap_cfg(tmp_path, max_epochs=2, method='l1_uniform', num_steps=1, begin=1,
                   importance=dict(type=importance))
    runner = Runner.from_cfg(cfg)
    runner.train()
    meta = load_ticket(str(tmp_path / 'tickets' / 'slim.pth')).meta
    assert meta['importance'] == dict(type=importance) and meta['flops_ratio'] <= 0.5
    assert hook_of(runner).pruner.history[0]['cost'] <= hook_of(runner).pruner.history[0][
        'target']


def test_taylor_importance_needs_training_before_its_first_step(tmp_path):
    cfg = psap_cfg(tmp_path, max_epochs=2, method='l1_uniform', num_steps=1, begin=0,
                   importance=dict(type='Taylor'))
    with pytest.raises(RuntimeError, match='use begin >= 1'):
        Runner.from_cfg(cfg).train()


def test_config_of_earlier_releases_builds_the_same_pruner():
    old = StructuredPruningHook(method='l1_global', target=dict(params=0.4), num_steps=2,
                                round_to=2, protective=True)
    new = StructuredPruningHook(pruner=dict(type='L1GlobalPruner', target=dict(params=0.4),
                                            num_steps=2, round_to=2, protective=True))
    for hook in (old, new):
        assert type(hook.pruner).__name__ == 'L1GlobalPruner' and hook.num_steps == 2
        assert (hook.pruner.target, hook.pruner.round_to, hook.pruner.protective) == (
            dict(params=0.4), 2, True)


def test_iteration_schedule_and_residual_pruning_report_out_channels(tmp_path):
    # from scratch (random init), steps every 2 iterations, residual streams pruned too
    cfg = psap_cfg(tmp_path, max_epochs=1, method='l1_global', target=dict(params=0.4),
                   num_steps=2, interval=2, begin=1, by_epoch=False, prune_residual=True)
    runner = Runner.from_cfg(cfg)
    runner.train()
    meta = load_ticket(str(tmp_path / 'tickets' / 'slim.pth')).meta
    assert meta['params_ratio'] <= 0.6 and meta['dense_out_channels'] == [8, 16, 32, 64]
    assert meta['out_channels'] != meta['dense_out_channels']
    slim = MODELS.build(dict(type='mmrecprune.PrunedBackbone', ticket=str(
        tmp_path / 'tickets' / 'slim.pth'), out_indices=(0, 1, 2, 3)))
    widths = [o.shape[1] for o in inference_forward(slim, torch.randn(*SHAPE))]
    assert widths == meta['out_channels']


@pytest.mark.parametrize('kwargs, match', [
    (dict(method='taylor'), 'method must be one of'),
    (dict(target=dict(flops=0.0)), r'must be in \(0, 1\)'),
    (dict(target=dict(flops=0.5, params=0.5)), 'one key out of'),
    (dict(num_steps=0), 'num_steps must be an int >= 1'),
    (dict(interval=0), 'interval must be an int >= 1'),
    (dict(method='l1_global', adaptive=True), "unexpected keyword argument 'adaptive'"),
    (dict(example_input_shape=(2, 3, 32, 32)), r'must be \(1, C, H, W\)'),
    (dict(pruner=dict(type='PSAPPruner', protect_factor=0)), 'protect_factor must be > 0'),
    (dict(pruner=dict(type='PSAPPruner', importance=dict(type='L3'))), 'unknown importance'),
    (dict(pruner=dict(type='NoSuchPruner')), 'unknown pruner type'),
    (dict(pruner=dict(type='PSAPPruner'), num_steps=2), 'inside `pruner=dict'),
])
def test_bad_hook_arguments_fail_when_the_hook_is_built(kwargs, match):
    # before any runner, model or data exists
    with pytest.raises(ValueError, match=match):
        StructuredPruningHook(**kwargs)


def test_schedule_longer_than_training_is_refused(tmp_path):
    cfg = psap_cfg(tmp_path, max_epochs=2, num_steps=3)
    with pytest.raises(ValueError, match=r'= 2, but training stops at max_epochs=2; set '
                                         r'max_epochs > 2'):
        Runner.from_cfg(cfg).train()


def test_plain_optim_wrapper_is_refused(tmp_path):
    cfg = psap_cfg(tmp_path)
    cfg.optim_wrapper.type = 'OptimWrapper'
    with pytest.raises(TypeError, match='ProtectiveOptimWrapper'):
        Runner.from_cfg(cfg).train()


def test_unreachable_target_is_refused_before_training(tmp_path):
    cfg = psap_cfg(tmp_path, target=dict(flops=0.9))
    with pytest.raises(ValueError, match='unreachable'):
        Runner.from_cfg(cfg).train()
    assert not list(tmp_path.glob('*.pth'))


@pytest.fixture(scope='module')
def slim_ticket(tmp_path_factory):
    path = export_test_ticket(
        tmp_path_factory.mktemp('slim') / 'slim.pth',
        dict(type='mmdet.ResNet', depth=18, base_channels=8),
        dict(STRUCTURED_50, target=dict(flops=0.4)), input_shape=SHAPE)
    ticket = load_ticket(path)
    return path, ticket.state_dict, ticket.channel_structure


def _build(path):
    return MODELS.build(dict(type='mmrecprune.PrunedBackbone', ticket=path))


def _resave(tmp_path, slim_ticket, structure):
    """The ticket written again with an edited channel structure (a corrupted file)."""
    _, state_dict, _ = slim_ticket
    path = str(tmp_path / 'edited.pth')
    save_ticket(path, dict(type='mmdet.ResNet', depth=18, base_channels=8), state_dict,
                channel_structure=structure, method='psap')
    return path


def test_channel_structure_that_does_not_match_the_weights_is_refused(tmp_path, slim_ticket):
    path, _, structure = slim_ticket
    _build(path)  # the untouched ticket loads
    name = next(iter(structure))
    wider = dict(structure, **{name: dict(structure[name], out=structure[name]['out'] + 1)})
    with pytest.raises(TicketError, match=f"channel_structure entry '{name}'.* has no weight"):
        _build(_resave(tmp_path, slim_ticket, wider))
    with pytest.raises(TicketError, match='has shape'):  # structure dropped: dense widths
        _build(_resave(tmp_path, slim_ticket, {}))


@pytest.mark.parametrize('entry', [dict(layer9={'in': 1, 'out': 1}),
                                   {'layer1.0.conv1': {'in': 8, 'out': 0}},
                                   {'layer1.0.bn1': {'in': 3, 'out': 4}},
                                   {'layer1.0.conv1': 5}])
def test_invalid_channel_structure_entries_raise_ticket_error(tmp_path, slim_ticket, entry):
    _, _, structure = slim_ticket
    with pytest.raises(TicketError):
        _build(_resave(tmp_path, slim_ticket, dict(structure, **entry)))
