"""The lottery-ticket hook in real MMEngine runs: rounds, rewinding, tickets, resume."""
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

from mmrecprune.hooks import LotteryTicketHook
from mmrecprune.tickets import load_ticket
from tests.conftest import kernels_or_skip, tiny_cls_cfg

RECPRUNE = 'configs/recprune/recprune_r18-w16_7r-1e_fashionmnist.py'
IMP = 'configs/imp/imp_r18-w16_7r-1e_fashionmnist.py'


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('pretrain')
    Runner.from_cfg(tiny_cls_cfg(work_dir, max_epochs=1)).train()
    return str(work_dir / 'epoch_1.pth')


def lottery_cfg(work_dir, pretrained, config=IMP, rounds=2, epochs_per_round=1):
    cfg = tiny_cls_cfg(work_dir, config=config, max_epochs=rounds * epochs_per_round)
    cfg.load_from = pretrained
    cfg.custom_hooks[0].update(rounds=rounds, epochs_per_round=epochs_per_round)
    cfg.optim_wrapper.optimizer.lr = 0.05  # move weights visibly in a few iterations
    if 'decoder' in cfg.model:
        cfg.model.decoder.in_channels = (8, 16, 32, 64)
    return cfg


def test_rounds_prune_rewind_and_export(tmp_path, pretrained):
    runner = Runner.from_cfg(lottery_cfg(tmp_path, pretrained, rounds=2))
    runner.train()
    pre = _load_checkpoint(pretrained)['state_dict']
    for r, expected in ((1, 0.2), (2, 0.36)):
        ticket = load_ticket(str(tmp_path / 'tickets' / f'round_{r}.pth'))
        assert ticket.meta['sparsity'] == pytest.approx(expected, abs=1e-3)
        assert (tmp_path / 'tickets' / f'round_{r}_sparsity.png').stat().st_size > 1000
    # the ticket is the pretrained weights times the mask
    for name, mask in ticket.masks.items():
        torch.testing.assert_close(ticket.state_dict[name], pre['backbone.' + name] * mask)
    assert 'conv1.weight' not in ticket.masks  # the stem is never pruned
    assert all(not n.startswith('head') for n in ticket.masks)


def test_recprune_trains_with_the_decoder_frozen(tmp_path, pretrained):
    cfg = lottery_cfg(tmp_path, pretrained, config=RECPRUNE, rounds=1)
    runner = Runner.from_cfg(cfg)
    decoder_before = {k: v.clone() for k, v in runner.model.decoder.state_dict().items()}
    runner.train()
    for k, v in runner.model.decoder.state_dict().items():
        torch.testing.assert_close(v, decoder_before[k], msg=k)
    assert load_ticket(str(tmp_path / 'tickets/round_1.pth')).meta['method'] == 'recprune'


def test_resume_mid_round_matches_uninterrupted_run(tmp_path, pretrained):
    cfg = lottery_cfg(tmp_path / 'full', pretrained, rounds=2, epochs_per_round=2)
    full = Runner.from_cfg(cfg)
    full.train()

    cfg = lottery_cfg(tmp_path / 'resumed', pretrained, rounds=2, epochs_per_round=2)
    cfg.resume = True
    cfg.load_from = str(tmp_path / 'full' / 'epoch_3.pth')  # middle of round 2
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    full_hook, resumed_hook = (next(h for h in r.hooks if isinstance(h, LotteryTicketHook))
                               for r in (full, resumed))
    assert resumed_hook.pruner.step_count == 2
    for n, m in full_hook.pruner.masks.items():
        assert torch.equal(m, resumed_hook.pruner.masks[n]), n
    for (n, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)


def test_compiled_ops_give_the_eager_runs_tickets_and_resume_bit_identical(tmp_path,
                                                                           pretrained):
    from mmrecprune.ops import mask_functions
    kernels_or_skip(mask_functions)
    runs = {}
    for name, compiled, resume in (('eager', False, False), ('compiled', True, False),
                                   ('resumed', True, True)):
        cfg = lottery_cfg(tmp_path / name, pretrained, rounds=2, epochs_per_round=2)
        cfg.custom_hooks[0].pruner.compiled_ops = compiled
        if resume:
            cfg.resume = True
            cfg.load_from = str(tmp_path / 'compiled' / 'epoch_3.pth')  # middle of round 2
        runner = Runner.from_cfg(cfg)
        runner.train()
        hook = next(h for h in runner.hooks if isinstance(h, LotteryTicketHook))
        assert hook.pruner.compiled_ops is compiled
        runs[name] = runner.model.state_dict()
    for name in ('compiled', 'resumed'):  # (one process, one thread count: the same bits)
        for key, value in runs['eager'].items():
            assert torch.equal(value, runs[name][key]), (name, key)
    for r in (1, 2):
        eager, compiled = (load_ticket(str(tmp_path / name / 'tickets' / f'round_{r}.pth'))
                           for name in ('eager', 'compiled'))
        assert all(torch.equal(m, compiled.masks[n]) for n, m in eager.masks.items())


class PrunerProbe(Hook):
    """Records the lottery hook's pruner at ``after_load_checkpoint`` (run after the lottery
    hook's, priority LOWEST) and at ``before_train``."""
    priority = 'LOWEST'

    def __init__(self):
        self.seen = {}

    def _record(self, runner, event):
        hook = next(h for h in runner.hooks if isinstance(h, LotteryTicketHook))
        p = hook.pruner
        self.seen[event] = dict(step_count=p.step_count, resumed=hook.resumed,
                                masks={n: m.clone() for n, m in p.masks.items()},
                                rewind_state=p.rewind_state)

    def after_load_checkpoint(self, runner, checkpoint):
        self._record(runner, 'after_load_checkpoint')

    def before_train(self, runner):
        self._record(runner, 'before_train')


@pytest.mark.parametrize('counter_key', ['step', 'round'])  # 'round': checkpoints of old code
def test_the_checkpoints_pruner_state_is_loaded_with_the_checkpoint(tmp_path, pretrained,
                                                                      counter_key):
    """As EMAHook does: the pruner is attached in before_run, and a resumed checkpoint's state
    is in it as soon as the checkpoint is loaded, before before_train (which then takes no new
    rewind target from the resumed weights)."""
    trained = Runner.from_cfg(lottery_cfg(tmp_path / 'trained', pretrained, rounds=1))
    trained.train()
    ckpt_path = tmp_path / 'trained' / 'epoch_1.pth'
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert ckpt['lottery_ticket']['step'] == 1
    ckpt['lottery_ticket'][counter_key] = ckpt['lottery_ticket'].pop('step')
    torch.save(ckpt, ckpt_path)

    cfg = lottery_cfg(tmp_path / 'resumed', pretrained, rounds=1)
    cfg.resume, cfg.load_from = True, str(ckpt_path)
    resumed = Runner.from_cfg(cfg)
    probe = PrunerProbe()
    resumed.register_hook(probe)
    resumed.train()  # ends at once: the checkpoint is of the last epoch
    trained_pruner = next(h for h in trained.hooks if isinstance(h, LotteryTicketHook)).pruner
    loaded = probe.seen['after_load_checkpoint']
    assert loaded['step_count'] == 1 and loaded['resumed']
    assert trained_pruner.sparsity == pytest.approx(0.2, abs=1e-3)
    for name, mask in trained_pruner.masks.items():
        assert torch.equal(loaded['masks'][name].cpu(), mask.cpu()), name
    # before_train kept the checkpoint's rewind target (the pretrained weights)
    started = probe.seen['before_train']
    pre = _load_checkpoint(pretrained)['state_dict']
    assert started['rewind_state'] is loaded['rewind_state']
    for name in trained_pruner.params:
        torch.testing.assert_close(started['rewind_state'][name].cpu(), pre[name],
                                   rtol=0, atol=0, msg=name)


@pytest.mark.parametrize('kwargs, match', [
    (dict(rounds=0), 'rounds must be an int in'),
    (dict(prune_ratio=1.0), r'prune_ratio must be in \(0, 1\)'),
    (dict(epochs_per_round=0), 'epochs_per_round must be an int'),
])
def test_bad_hook_arguments(kwargs, match):
    args = dict(rounds=2, epochs_per_round=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LotteryTicketHook(**args)


def test_mismatched_schedule_is_refused_before_training(tmp_path, pretrained):
    cfg = lottery_cfg(tmp_path, pretrained, rounds=2)
    cfg.train_cfg.max_epochs = 3
    with pytest.raises(ValueError, match='set max_epochs=2'):
        Runner.from_cfg(cfg).train()
    assert not list(tmp_path.glob('*.pth'))


def test_reset_lr_restarts_the_schedule_every_round(tmp_path, pretrained):
    cfg = lottery_cfg(tmp_path, pretrained, rounds=2)
    cfg.custom_hooks[0].reset_lr = True
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                                end=100)]
    # a message hub of its own: MMEngine names it by the start second, which an earlier runner
    # of this process may share (its lr history would join this one)
    cfg.experiment_name = tmp_path.name
    runner = Runner.from_cfg(cfg)
    runner.train()
    # the lr logged at each of the 2 x 4 iterations: round 2 starts the warm-up again
    lrs = list(runner.message_hub.get_scalar('train/lr').data[0])
    assert len(lrs) == 8 and lrs[4:] == pytest.approx(lrs[:4])
    assert lrs[0] < lrs[3]
