"""Gradient statistics (sparsity/gradient_monitor.py). ChannelGradientMonitor: per channel, the
norm over (batch, space) of the loss gradient w.r.t. the activation its consumers read, summed
over the backward passes of one optimizer step, unscaled, folded into an EMA; inactive it has no
hooks; overflow steps leave it unchanged; its state round-trips. GradientScores: the mean of a
criterion's scores over the steps since the last reset."""
import pytest
import torch
from torch import nn

from mmrecprune.sparsity import (ChannelGradientMonitor, GradientScores, find_channel_groups,
                                 unscaled_gradients)

pytestmark = pytest.mark.usefixtures('single_thread')
MOMENTUM = 0.9


def convnet():
    """Group '0': conv 0's channels, read by conv 3; group '3': conv 3's, read by the linear."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))


def inputs(seed):
    return torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def monitored(net, momentum=MOMENTUM):
    groups = find_channel_groups(net, inputs(0))
    assert [(g.name, g.num_channels) for g in groups] == [('0', 8), ('3', 6)]
    monitor = ChannelGradientMonitor(net, groups, momentum)
    monitor.set_active(True)
    return monitor


def backward(net, seed, scale=1.0):
    """One backward pass of ``scale`` x the loss; returns the per-channel sums of squared
    activation gradients the monitor should see (of the tensors conv 3 and the linear read)."""
    activations = []

    def keep(module, args):
        args[0].retain_grad()
        activations.append(args[0])

    handles = [net[i].register_forward_pre_hook(keep) for i in (3, 8)]
    (scale * net(inputs(seed)).square().mean()).backward()
    for handle in handles:
        handle.remove()
    return torch.cat([a.grad.transpose(0, 1).reshape(a.shape[1], -1).square().sum(dim=1)
                      for a in activations])


def test_ema_of_activation_gradient_norms_over_steps():
    """Step 1 sets E to the norms G1, step 2 blends: E = beta * G1 + (1 - beta) * G2; two
    backward passes before one update count as one step of their summed squares."""
    net = convnet().train()
    monitor = monitored(net)
    g1 = backward(net, seed=1).sqrt()
    monitor.update()
    torch.testing.assert_close(monitor.ema, g1)
    assert monitor.count.tolist() == [1] * 14
    g2 = backward(net, seed=2).sqrt()
    monitor.update()
    torch.testing.assert_close(monitor.ema, MOMENTUM * g1 + (1 - MOMENTUM) * g2)
    squares = backward(net, seed=3) + backward(net, seed=4)  # gradient accumulation
    monitor.update()
    expected = MOMENTUM * (MOMENTUM * g1 + (1 - MOMENTUM) * g2) + (1 - MOMENTUM) * squares.sqrt()
    torch.testing.assert_close(monitor.ema, expected)
    assert monitor.count.tolist() == [3] * 14
    torch.testing.assert_close(monitor.view(monitor.ema, 1), expected[8:])


def test_loss_scale_is_divided_out_and_overflow_steps_are_skipped():
    net = convnet().train()
    monitor = monitored(net)
    g1 = backward(net, seed=1, scale=512.0).sqrt() / 512.0
    monitor.update(scale=512.0)
    torch.testing.assert_close(monitor.ema, g1)
    backward(net, seed=2, scale=float('inf'))  # an AMP overflow step: non-finite gradients
    monitor.update(scale=512.0)
    torch.testing.assert_close(monitor.ema, g1)
    assert monitor.count.tolist() == [1] * 14


def test_inactive_monitor_has_no_hooks_and_drops_what_was_pending():
    net = convnet().train()
    monitor = monitored(net)
    backward(net, seed=1)
    monitor.set_active(False)  # the pending sums go
    assert not monitor.active
    assert not any(m._forward_pre_hooks for m in net.modules())
    backward(net, seed=2)
    monitor.update()
    assert not monitor.ema.any() and not monitor.count.any()
    monitor.set_active(True)
    g3 = backward(net, seed=3).sqrt()
    monitor.update()
    torch.testing.assert_close(monitor.ema, g3)


class TwoReaders(nn.Module):
    """One activation read by two convs: its gradient already sums both, so it counts once."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(8, 4, 1)
        self.right = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv(x).relu()
        if y.requires_grad:  # not while the groups are traced (under no_grad)
            y.retain_grad()
        self.activation = y
        return self.left(y) * self.right(y)


def test_an_activation_read_by_two_consumers_is_counted_once():
    torch.manual_seed(0)
    net = TwoReaders()
    groups = find_channel_groups(net, inputs(0))
    conv_group = next(g for g in groups if ('conv', 'conv_out') in g.members)
    assert {('left', 'conv_in'), ('right', 'conv_in')} <= set(conv_group.members)
    monitor = ChannelGradientMonitor(net, [conv_group], MOMENTUM)
    monitor.set_active(True)
    net(inputs(1)).square().mean().backward()
    monitor.update()
    grad = net.activation.grad
    expected = grad.transpose(0, 1).reshape(8, -1).norm(dim=1)
    torch.testing.assert_close(monitor.ema, expected)


def test_state_round_trip_and_checks():
    net = convnet().train()
    monitor = monitored(net)
    backward(net, seed=1)
    monitor.update()
    other = monitored(convnet())
    other.load_state_dict(monitor.state_dict())
    assert torch.equal(other.ema, monitor.ema) and torch.equal(other.count, monitor.count)
    with pytest.raises(ValueError, match="'ema' have shape"):
        other.load_state_dict(dict(ema=torch.zeros(3), count=torch.zeros(3, dtype=torch.long)))
    with pytest.raises(ValueError, match='grad_momentum must be in'):
        ChannelGradientMonitor(net, other.groups, momentum=1.0)


def test_gradient_scores_mean_since_reset():
    scores = GradientScores()
    assert scores.mean() is None
    assert scores.add({'a': torch.tensor([1.0, 2.0])})
    assert not scores.add({'a': torch.tensor([float('nan'), 0.0])})  # skipped whole
    assert scores.add({'a': torch.tensor([3.0, 6.0])})
    assert torch.equal(scores.mean()['a'], torch.tensor([2.0, 4.0])) and scores.steps == 2
    restored = GradientScores()
    restored.load_state_dict(scores.state_dict())
    assert torch.equal(restored.mean()['a'], torch.tensor([2.0, 4.0]))
    with pytest.raises(ValueError, match='other tensors'):
        scores.add({'b': torch.tensor([1.0])})
    scores.reset()
    assert scores.mean() is None and scores.statistics() == []
    weight = nn.Parameter(torch.ones(2))
    (weight * 8).sum().backward()
    assert torch.equal(unscaled_gradients({'w': weight}, scale=4.0)['w'], torch.full((2, ), 2.0))
    assert unscaled_gradients({'w': nn.Parameter(torch.ones(1))}) == {}
