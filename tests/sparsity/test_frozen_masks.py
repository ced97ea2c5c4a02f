"""freeze_masks (sparsity/frozen_masks.py) on an mmdet ResNet-18-w8 with its first stage frozen,
as a ticket backbone is fine-tuned downstream under a plain optimizer: pruned entries hold 0 or
their fill after every step with momentum and weight decay, and again after a load_state_dict
of drifted values; frozen-stage weights get no gradient hook and do not move."""
import pytest
import torch
from mmdet.models.backbones import ResNet

from mmrecprune.sparsity import freeze_masks, prunable_parameters

pytestmark = pytest.mark.usefixtures('single_thread')
#: the masked weights given non-zero fills: one of the frozen stage, one trained
FILLED = ('layer1.0.conv1.weight', 'layer2.0.conv2.weight')


def ticket_backbone():
    """A frozen-stage ResNet with 60 % of every non-stem conv pruned at random, two of them
    with per-filter fill values (ticket format v2)."""
    torch.manual_seed(0)
    net = ResNet(depth=18, base_channels=8, frozen_stages=1)
    net.train()  # mmdet freezes the stem and layer1 here (requires_grad=False, eval BN)
    params = prunable_parameters(net)
    masks = {n: torch.rand(p.shape) > 0.6 for n, p in params.items()}
    fills = {n: params[n].detach().abs().mean(dim=(1, 2, 3), keepdim=True) + 0.01
             for n in FILLED}
    return net, params, masks, fills


def expected_pruned(masks, fills, name):
    fill = fills.get(name, torch.zeros(()))
    return torch.broadcast_to(fill, masks[name].shape)[~masks[name]]


def assert_pruned_entries_hold(state, masks, fills, when):
    for name, mask in masks.items():
        assert torch.equal(state[name][~mask], expected_pruned(masks, fills, name)), (
            f'{when}: {name} pruned entries moved')


def drifted_entries(params, masks, fills):
    """Per masked weight, whether its pruned entries differ from 0 / their fill."""
    return [not torch.equal(params[n][~masks[n]], expected_pruned(masks, fills, n))
            for n in masks]


def step(net, optimizer, seed):
    optimizer.zero_grad()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    sum(out.square().mean() for out in net(x)).backward()
    optimizer.step()


@pytest.mark.parametrize('optimizer_type', [torch.optim.SGD, torch.optim.AdamW])
def test_pruned_entries_hold_through_steps_with_weight_decay_and_momentum(optimizer_type):
    net, params, masks, fills = ticket_backbone()
    frozen = [n for n, p in params.items() if not p.requires_grad]
    assert frozen and all(n.startswith('layer1.') for n in frozen)
    handles = freeze_masks(params, masks, fills, owner=net)
    # a gradient hook per trainable masked weight, the step post-hook, the forward pre-hook
    assert len(handles) == len(params) - len(frozen) + 2
    assert_pruned_entries_hold(net.state_dict(), masks, fills, 'at once')
    frozen_before = {n: params[n].detach().clone() for n in frozen}
    trained_before = {n: p.detach().clone() for n, p in params.items() if p.requires_grad}
    kwargs = dict(momentum=0.9) if optimizer_type is torch.optim.SGD else {}
    optimizer = optimizer_type([p for p in net.parameters() if p.requires_grad], lr=0.05,
                               weight_decay=0.05, **kwargs)
    for seed in range(3):
        step(net, optimizer, seed)
        # a state_dict right after the step: what a checkpoint hook saves
        assert_pruned_entries_hold(net.state_dict(), masks, fills, f'after step {seed}')
        for name, param in params.items():
            if param.requires_grad:
                assert not param.grad[~masks[name]].any(), name  # zeroed as backward made it
    for name in frozen:
        assert params[name].grad is None and torch.equal(params[name], frozen_before[name])
    for name, before in trained_before.items():
        assert not torch.equal(params[name][masks[name]], before[masks[name]]), name
    if optimizer_type is torch.optim.SGD:  # zero gradient, zero weight: no momentum builds up
        zero_filled = [n for n in trained_before if n not in fills]
        for name in zero_filled:
            buffer = optimizer.state[params[name]]['momentum_buffer']
            assert not buffer[~masks[name]].any(), name


@pytest.mark.parametrize('with_fills', [True, False])
def test_pruned_entries_hold_again_after_loading_drifted_values(with_fills):
    """A checkpoint whose pruned entries drifted (written before fills were enforced) loads as
    it is. With fill values the owner's forward pre-hook puts every pruned entry back before
    the next forward; with zeros only (no pre-hook) the next optimizer step does."""
    net, params, masks, fills = ticket_backbone()
    fills = fills if with_fills else {}
    freeze_masks(params, masks, fills, owner=net)
    drifted = net.state_dict()
    for name, mask in masks.items():
        drifted[name] = drifted[name] + 0.25 * (~mask)
    net.load_state_dict(drifted)
    assert all(drifted_entries(params, masks, fills))
    with torch.no_grad():
        net(torch.randn(1, 3, 32, 32))
    if with_fills:
        assert_pruned_entries_hold(net.state_dict(), masks, fills, 'after a forward')
    else:
        assert all(drifted_entries(params, masks, fills))
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.05,
                                momentum=0.9, weight_decay=0.05)
    step(net, optimizer, seed=0)
    assert_pruned_entries_hold(net.state_dict(), masks, fills, 'after the step')


def test_removing_the_handles_lets_pruned_entries_train_and_fills_need_an_owner():
    net, params, masks, fills = ticket_backbone()
    with pytest.raises(ValueError, match='need the owner module'):
        freeze_masks(params, masks, fills)
    handles = freeze_masks(params, masks)
    for handle in handles:
        handle.remove()
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.05)
    step(net, optimizer, seed=0)
    name = 'layer2.0.conv2.weight'
    assert params[name][~masks[name]].any()
