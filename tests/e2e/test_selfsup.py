"""Pruning with self-supervision end to end, with the shipped configs/selfsup/ configs shrunk:
RotNet / S4L tickets, late resetting and 'reinit', resume, DDP, mask transfer (ticket or random
weights, ticket or random masks), linear probes and frozen-backbone scenes probes."""
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmrecprune.hooks import LotteryTicketHook
from mmrecprune.models.pruned_backbone import read_header
from mmrecprune.registry import MODELS
from mmrecprune.tickets import TicketError, load_ticket
from tests.conftest import (dist_train, repo_path, tiny_cls_cfg, tiny_dist_config,
                            train_downstream)

ROTNET = 'configs/selfsup/rotnet-imp_r18-w16_7r-2e_fashionmnist.py'
S4L = 'configs/selfsup/s4l-imp_r18-w16_7r-2e_fashionmnist.py'
RETRAIN = 'configs/selfsup/label-retrain_r18-w16-ticket_fashionmnist.py'
PROBE = 'configs/selfsup/linear-probe_r18-w16-ticket_fashionmnist.py'


def rotnet_cfg(work_dir, config=ROTNET, rounds=2, epochs_per_round=1, **pruner):
    """The shipped config at width 8 on 64 images (4 iterations per epoch)."""
    cfg = tiny_cls_cfg(work_dir, config=config, max_epochs=rounds * epochs_per_round)
    hook = cfg.custom_hooks[0]
    hook.update(rounds=rounds, epochs_per_round=epochs_per_round,
                example_input_shape=(1, 3, 32, 32))
    hook.pruner.update(rewind_iter=2, **pruner)
    cfg.train_cfg.val_interval = epochs_per_round
    cfg.default_hooks.checkpoint.interval = 1
    cfg.default_hooks.checkpoint.save_best = None
    return cfg


def hook_of(runner):
    return next(h for h in runner.hooks if isinstance(h, LotteryTicketHook))


@pytest.fixture(scope='module')
def rotnet_ticket(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('rotnet')
    runner = Runner.from_cfg(rotnet_cfg(work_dir))
    runner.train()
    return str(work_dir / 'tickets' / 'round_2.pth'), runner


def test_rotnet_pruning_makes_tickets_over_all_convs(rotnet_ticket):
    path, runner = rotnet_ticket
    ticket = load_ticket(path)
    assert ticket.meta['method'] == 'rotnet-imp' and ticket.meta['rewind_to'] == 'iteration'
    assert abs(ticket.meta['sparsity'] - 0.36) < 1e-3
    assert 'conv1.weight' in ticket.masks  # the stem is pruned too, as in the paper
    assert 0 <= runner.message_hub.get_scalar('val/rotation/top1').current() <= 100


def test_s4l_prunes_with_a_labelled_share(tmp_path):
    cfg = rotnet_cfg(tmp_path, config=S4L, rounds=1)
    assert cfg.model.labelled_fraction == 0.1
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert 'cls_head.fc.weight' in runner.model.state_dict()
    assert load_ticket(str(tmp_path / 'tickets' / 'round_1.pth')).meta['method'] == 's4l-imp'


def test_reinit_keeps_only_the_mask(tmp_path):
    runner = Runner.from_cfg(rotnet_cfg(tmp_path, rounds=1, rewind_to='reinit'))
    start = {k: v.clone() for k, v in runner.model.backbone.state_dict().items()}
    runner.train()
    pruner = hook_of(runner).pruner
    after = runner.model.backbone.state_dict()
    name = 'layer1.0.conv1.weight'
    kept = pruner.masks['backbone.' + name]
    assert not after[name][~kept].any()
    assert not torch.equal(after[name][kept], start[name][kept])  # not the rewind point
    assert torch.equal(after['bn1.running_mean'], torch.zeros_like(after['bn1.running_mean']))
    # the draw is the run's seed: a second run gives the same weights
    again = Runner.from_cfg(rotnet_cfg(tmp_path / 'again', rounds=1, rewind_to='reinit'))
    again.train()
    torch.testing.assert_close(again.model.backbone.state_dict()[name], after[name])


def test_rewind_iteration_after_round_one_is_refused_before_training(tmp_path):
    cfg = rotnet_cfg(tmp_path, rounds=2, epochs_per_round=1)
    cfg.custom_hooks[0].pruner.rewind_iter = 5  # round 1 has 4 iterations
    with pytest.raises(ValueError, match='after the end of round 1'):
        Runner.from_cfg(cfg).train()
    assert not list(tmp_path.glob('*.pth'))


def test_resume_mid_round_reproduces_masks_and_weights(tmp_path):
    full = Runner.from_cfg(rotnet_cfg(tmp_path / 'full', rounds=2, epochs_per_round=2))
    full.train()
    cfg = rotnet_cfg(tmp_path / 'resumed', rounds=2, epochs_per_round=2)
    cfg.resume = True
    cfg.load_from = str(tmp_path / 'full' / 'epoch_1.pth')  # round 1, after the rewind point
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    for n, m in hook_of(full).pruner.masks.items():
        assert torch.equal(m, hook_of(resumed).pruner.masks[n]), n
    for (n, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)


def test_ddp_ranks_hold_identical_masks(tmp_path):
    config = tiny_dist_config(tmp_path / 'rotnet_dist.py', ROTNET, """
rounds = 2
train_cfg = dict(max_epochs=2, val_interval=1)
default_hooks = dict(checkpoint=dict(interval=1, save_best=None), logger=dict(interval=1))
custom_hooks = [dict(type='LotteryTicketHook', rounds=2, epochs_per_round=1,
                     example_input_shape=(1, 3, 32, 32),
                     pruner=dict(type='IterativeMagnitudePruner', rewind_to='iteration',
                                 rewind_iter=2, include=('backbone.*', ), exclude=()))]
""")
    log = dist_train(config, tmp_path / 'work')
    assert log.count('masks identical on 2 ranks (weights too)') == 2, log[-3000:]


# -- mask transfer --------------------------------------------------------------------------------
def _backbone(path, **options):
    return MODELS.build(dict(type='mmrecprune.PrunedBackbone', ticket=path, out_indices=(3, ),
                             **options))


def test_mask_transfer_weights_and_random_mask_control(rotnet_ticket, tmp_path):
    path, runner = rotnet_ticket
    ticket = load_ticket(path)
    name = 'layer2.0.conv1.weight'
    own = _backbone(path).state_dict()[name]
    rand = _backbone(path, weights='random', seed=1).state_dict()[name]
    assert torch.equal(own, ticket.state_dict[name])
    assert not torch.equal(rand, own) and not rand[~ticket.masks[name]].any()
    torch.testing.assert_close(_backbone(path, weights='random', seed=1).state_dict()[name], rand)
    ctrl = _backbone(path, masks='random', seed=2)
    ctrl_mask = read_header(ctrl.state_dict()['ticket'], '')['masks'][name]
    from mmrecprune.sparsity import unpack_mask
    ctrl_mask = unpack_mask(ctrl_mask['bits'], ctrl_mask['shape'])
    assert int(ctrl_mask.sum()) == int(ticket.masks[name].sum())  # same per-layer sparsity
    assert not torch.equal(ctrl_mask, ticket.masks[name])
    assert not ctrl.state_dict()[name][~ctrl_mask].any()
    # weights from a dense checkpoint (e.g. the rewind point): the run's epoch_1.pth
    ckpt = str(runner.work_dir + '/epoch_1.pth')
    dense = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    from_ckpt = _backbone(path, weights=ckpt).state_dict()[name]
    keep = ticket.masks[name]
    assert torch.equal(from_ckpt[keep], dense['backbone.' + name][keep])


def test_mask_transfer_refuses_weights_of_another_architecture(rotnet_ticket, tmp_path):
    path, _ = rotnet_ticket
    wider = tiny_cls_cfg(tmp_path, max_epochs=1, base_channels=16, train_size=16)
    Runner.from_cfg(wider).train()
    with pytest.raises(TicketError, match="do not fit the ticket's backbone"):
        _backbone(path, weights=str(tmp_path / 'epoch_1.pth'))
    with pytest.raises(TicketError, match='no such checkpoint file'):
        _backbone(path, weights=str(tmp_path / 'missing.pth'))
    with pytest.raises(TicketError, match="masks must be 'ticket' or 'random'"):
        _backbone(path, masks='shuffled')


def _ticket_cls_cfg(config, work_dir, ticket, **backbone):
    cfg = Config.fromfile(repo_path(config))
    base = tiny_cls_cfg(work_dir, max_epochs=1)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'default_hooks',
                'log_level', 'visualizer', 'work_dir'):
        cfg[key] = base[key]
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 1
    cfg.param_scheduler = []
    cfg.model.in_channels = 64
    cfg.model.backbone.update(ticket=ticket, **backbone)
    return cfg


@pytest.mark.parametrize('weights', ['ticket', 'random'])
def test_label_retraining_keeps_the_mask(rotnet_ticket, tmp_path, weights):
    path, _ = rotnet_ticket
    runner = Runner.from_cfg(_ticket_cls_cfg(RETRAIN, tmp_path, path, weights=weights))
    runner.train()
    masks = load_ticket(path).masks
    state = runner.model.backbone.state_dict()
    for name, mask in masks.items():
        assert not state[name][~mask].any(), name
    assert runner.message_hub.get_scalar('val/accuracy/top1').current() >= 0


def test_linear_probe_trains_only_the_head(rotnet_ticket, tmp_path):
    path, _ = rotnet_ticket
    runner = Runner.from_cfg(_ticket_cls_cfg(PROBE, tmp_path, path))
    before = {k: v.clone() for k, v in runner.model.state_dict().items() if torch.is_tensor(v)}
    runner.train()
    after = runner.model.state_dict()
    for k, v in after.items():
        if k.startswith('backbone.') and torch.is_tensor(v):
            assert torch.equal(v, before[k]), k  # weights and BN statistics
    assert not torch.equal(after['head.fc.weight'], before['head.fc.weight'])


def test_linear_probe_on_outputs_that_cannot_feed_the_head_is_refused(rotnet_ticket, tmp_path):
    path, _ = rotnet_ticket
    cfg = _ticket_cls_cfg(PROBE, tmp_path, path)
    cfg.model.backbone.out_indices = (2, )  # 32 channels; the head reads 64
    with pytest.raises(ValueError, match='last output has 32 channels, the head takes '
                                         'in_channels=64'):
        Runner.from_cfg(cfg).train()


# -- the ticket downstream ------------------------------------------------------------------------
@pytest.mark.parametrize('config, length', [
    ('configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py', 1),
    ('configs/downstream/mmseg/fpn_r18-w16-ticket_1k_fashionscenes.py', 2),
    ('configs/downstream/mmdet/retinanet_r18-w16-ticket-frozen_fpn_12e_fashionscenes.py', 1),
    ('configs/downstream/mmseg/fpn_r18-w16-ticket-frozen_1k_fashionscenes.py', 2),
])
def test_rotnet_ticket_trains_in_detection_and_segmentation(rotnet_ticket, scenes, tmp_path,
                                                             config, length):
    path, _ = rotnet_ticket
    ticket = load_ticket(path)
    runner = train_downstream(config, tmp_path, scenes, path, length, base_channels=8)
    state = runner.model.backbone.state_dict()
    for name, mask in ticket.masks.items():
        assert not state[name][~mask].any(), name
    if 'frozen' in config:  # nothing of the backbone moved, BN statistics included
        for name, value in ticket.state_dict.items():
            assert torch.equal(state[name], value), name


def test_mask_transfer_of_a_ticket_the_classifier_was_not_built_for_is_refused(rotnet_ticket,
                                                                                tmp_path):
    path, _ = rotnet_ticket
    cfg = _ticket_cls_cfg(RETRAIN, tmp_path, path, weights='random')
    cfg.model.in_channels = 128  # the config's own width-16 head; the ticket is width 8
    with pytest.raises(ValueError, match='last output has 64 channels, the head takes '
                                         'in_channels=128'):
        Runner.from_cfg(cfg).train()
    assert not list(tmp_path.glob('*.pth'))
