"""SoftChannelMasks (sparsity/soft_channel_masks.py): a pruned channel outputs exactly zero and
stays zero through optimizer steps, comes back from its backup, leaves the model on slim()
(outputs unchanged, optimizer state sliced along), and its masks, backups and slimmed widths
survive a state_dict round trip into a fresh model."""
import pytest
import torch
from torch import nn

from mmrecprune.sparsity import CHANNEL_PARAMS, SoftChannelMasks, find_channel_groups
from tests.conftest import half_width_masks

pytestmark = pytest.mark.usefixtures('single_thread')
#: channels pruned per group of :func:`convnet` ('0': conv 0's outputs, '3': conv 3's)
DROPPED = {'0': [1, 4, 6], '3': [0, 5]}


def convnet():
    """conv-BN-ReLU x2, pooled into a linear head; BN with non-trivial affine parameters and
    statistics, so a zero output is the mask's doing and not the initialisation's."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(0.1, 0.5)  # positive: a kept channel's ReLU output is not all 0
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return net


def inputs(seed=1):
    return torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def soft_masks(net):
    groups = find_channel_groups(net, inputs())
    assert [(g.name, g.num_channels) for g in groups] == [('0', 8), ('3', 6)]
    return SoftChannelMasks(net, groups)


def masks_without(soft, dropped):
    masks = {g.name: torch.ones(g.num_channels, dtype=torch.bool) for g in soft.groups}
    for name, channels in dropped.items():
        masks[name][channels] = False
    return masks


def block_outputs(net, x):
    """The ReLU outputs of both blocks (the channels the two groups carry)."""
    outs = []
    handles = [net[i].register_forward_hook(lambda m, a, out: outs.append(out.detach()))
               for i in (2, 5)]
    net(x)
    for h in handles:
        h.remove()
    return outs


def channel_tensors(soft):
    """``(group name, key, tensor with the channels first)`` of every tensor soft pruning backs
    up and restores: filters, biases, BN affine parameters (all zeroed) and statistics."""
    return [(g.name, key, getattr(module, attr).detach().transpose(0, dim))
            for g in soft.groups for key, module, attr, dim in soft.tensors(g)]


def test_pruned_channels_output_zero_and_kept_ones_are_untouched():
    net = convnet().eval()
    dense_first, _ = block_outputs(net, inputs())
    soft = soft_masks(net)
    masks = masks_without(soft, DROPPED)
    changed = soft.update(masks)
    assert {n: c.nonzero().flatten().tolist() for n, c in changed.items()} == DROPPED
    first, second = block_outputs(net, inputs())
    assert not first[:, DROPPED['0']].any() and not second[:, DROPPED['3']].any()
    kept = masks['0']
    assert torch.equal(first[:, kept], dense_first[:, kept])  # its input did not change
    assert second[:, masks['3']].abs().sum(dim=(0, 2, 3)).min() > 0
    for group, key, tensor in channel_tensors(soft):
        if 'running' in key:  # BN statistics stay: with weight = bias = 0 the output is 0
            assert tensor[DROPPED[group]].any(), key
        else:  # filters, biases, BN weights and biases
            assert not tensor[DROPPED[group]].any(), key


def pruned_parameters(soft, dropped):
    """``{key: (parameter, channel dim, pruned channels)}`` of the zeroed parameters."""
    return {key: (getattr(module, attr), dim, dropped[g.name]) for g in soft.groups
            for key, module, attr, dim in soft.tensors(g) if 'running' not in attr}


def test_pruned_channels_get_no_update_through_optimizer_steps():
    """With momentum and weight decay: every pruned entry (filter, bias, BN weight and bias)
    gets an exactly zero gradient, so it is still 0 after each step, and so is its channel's
    train-mode output; kept filters train. :meth:`reapply` zeroes an entry something else
    moved (a step of another optimizer, a layer whose output gradient is not 0)."""
    net = convnet().train()
    soft = soft_masks(net)
    soft.update(masks_without(soft, DROPPED))
    pruned = pruned_parameters(soft, DROPPED)
    assert len(pruned) == 8  # per group: its conv's weight and bias, its BN's weight and bias
    before = net[0].weight.detach().clone()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    for step in range(3):
        optimizer.zero_grad()
        net(inputs(seed=step)).square().mean().backward()
        for key, (param, dim, channels) in pruned.items():
            assert not param.grad.transpose(0, dim)[channels].any(), key
        optimizer.step()
        for key, (param, dim, channels) in pruned.items():
            assert not param.detach().transpose(0, dim)[channels].any(), key
        first, second = block_outputs(net, inputs(seed=10 + step))
        assert not first[:, DROPPED['0']].any() and not second[:, DROPPED['3']].any()
    kept = masks_without(soft, DROPPED)['0']
    assert not torch.equal(net[0].weight[kept], before[kept])
    with torch.no_grad():
        net[1].bias[DROPPED['0']] = 0.5
        net[3].weight[DROPPED['3']] = 0.5
    soft.reapply()
    assert not net[1].bias[DROPPED['0']].any() and not net[3].weight[DROPPED['3']].any()


def test_restored_channels_come_back_with_their_values_at_pruning_time():
    net = convnet()
    soft = soft_masks(net)
    dense = {key: tensor.clone() for _, key, tensor in channel_tensors(soft)}
    soft.update(masks_without(soft, DROPPED))
    restored = {'0': [4], '3': [0, 5]}
    partly = masks_without(soft, {'0': [1, 6]})
    changed = soft.update(partly)
    assert {n: c.nonzero().flatten().tolist() for n, c in changed.items()} == restored
    for group, key, tensor in channel_tensors(soft):
        keep = partly[group]
        assert torch.equal(tensor[keep], dense[key][keep]), key
        assert 'running' in key or not tensor[~keep].any(), key


def train_step(net, x, optimizer):
    """One optimizer step in train mode (the graph is freed on return, as in a training loop:
    slimming changes the parameters' shapes in place)."""
    net.train()
    optimizer.zero_grad()
    out = net(x)
    (out if torch.is_tensor(out) else out[-1]).square().mean().backward()
    optimizer.step()


def slimmed_slices(net, groups, masks):
    """``{(member, attr): tensor}``: every channel tensor of the groups' members cut to the
    kept channels of every group it belongs to (a consumer conv: its outputs and inputs)."""
    modules = dict(net.named_modules())
    out = {}
    for g in groups:
        kept = masks[g.name].nonzero().flatten()
        for member, kind in g.members:
            for attr, dim in CHANNEL_PARAMS[kind]:
                tensor = getattr(modules[member], attr, None)
                if tensor is not None:
                    current = out.get((member, attr), tensor.detach().clone())
                    out[(member, attr)] = current.index_select(dim, kept)
    return out


@pytest.mark.parametrize('model', ['convnet', 'resnet18-w8'])
def test_slim_removes_exactly_the_pruned_channels_and_keeps_the_outputs(model):
    """After a step (so the optimizer holds momentum), slim() leaves every member at the kept
    widths, the same parameter objects holding the kept slices, momentum sliced along, and the
    model computing what the soft-masked one did."""
    if model == 'convnet':
        net = convnet()
        x = inputs()
    else:
        from mmdet.models.backbones import ResNet
        torch.manual_seed(0)
        net = ResNet(depth=18, base_channels=8)
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    groups = find_channel_groups(net, x)
    soft = SoftChannelMasks(net, groups)
    masks = masks_without(soft, DROPPED) if model == 'convnet' else half_width_masks(net, groups)
    soft.update(masks)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    train_step(net, x, optimizer)
    soft.reapply()
    net.eval()
    with torch.no_grad():
        expected = net(x)
    params = dict(net.named_parameters())
    slices = slimmed_slices(net, groups, masks)

    removed = soft.slim([optimizer])
    assert removed == {g.name: int((~masks[g.name]).sum()) for g in groups}
    modules = dict(net.named_modules())
    for (member, attr), values in slices.items():
        assert torch.equal(getattr(modules[member], attr).detach(), values), (member, attr)
    for g in groups:
        assert torch.equal(soft.present[g.name], masks[g.name].nonzero().flatten())
    assert all(p is params[n] for n, p in net.named_parameters())
    for p in net.parameters():
        assert optimizer.state[p]['momentum_buffer'].shape == p.shape
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected)
    train_step(net, x, optimizer)  # the slim model trains on with its optimizer


def test_state_round_trip_into_a_fresh_model():
    """A fresh dense copy given the state (masks, backups, slimmed widths) and then the slim
    weights computes what the original does, and can still restore the channels that were
    pruned but not slimmed away from their backups."""
    net = convnet().eval()
    soft = soft_masks(net)
    dense_weight = net[3].weight.detach().clone()
    soft.update(masks_without(soft, {'0': DROPPED['0']}))
    soft.slim()  # group '0' leaves the model
    soft.update(masks_without(soft, DROPPED))  # group '3' is pruned softly, backed up
    state, weights = soft.state_dict(), net.state_dict()

    fresh = convnet().eval()
    fresh_soft = soft_masks(fresh)
    fresh_soft.load_state_dict(state)
    assert fresh[0].out_channels == fresh[3].in_channels == 5
    fresh.load_state_dict(weights)
    x = inputs(seed=5)
    assert torch.equal(fresh(x), net(x))
    fresh_soft.update(masks_without(fresh_soft, {'0': DROPPED['0']}))  # '3' comes back
    kept_inputs = masks_without(soft, DROPPED)['0']
    assert torch.equal(fresh[3].weight.detach(), dense_weight[:, kept_inputs])
