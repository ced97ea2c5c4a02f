"""shape_forward: the shape-only pass behind channel-group tracing and the cost model.

Its conv / linear / BN layers return zeros of their output shape instead of computing, so the
structured prune does not pay for a full-size forward. The tests hold it to the real pass: the
same output shapes layer by layer, and for the L1-uniform prune of MMDetection's ResNet-18 and
ResNet-50 the same groups, cost terms, kept channels and slim weights as tracing with the real
``inference_forward`` (the code path before).
"""
import pytest
import torch
from torch import nn

from mmrecprune.methods import L1UniformPruner
from mmrecprune.sparsity import channel_cost, channel_groups, inference_forward, slim_model
from mmrecprune.sparsity.flops import shape_forward

mmdet_backbones = pytest.importorskip('mmdet.models.backbones')


class OwnForwardConv(nn.Conv2d):
    """A subclass with its own forward: must run for real (it may do anything)."""

    def forward(self, x):
        return super().forward(x) + 1


LAYERS = [
    (nn.Conv1d(3, 5, 3, stride=2, padding=1), (2, 3, 11)),
    (nn.Conv2d(3, 5, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1)), (2, 3, 13, 9)),
    (nn.Conv2d(3, 5, 3, padding='same', dilation=2), (1, 3, 7, 8)),
    (nn.Conv2d(3, 5, 3, padding='valid'), (1, 3, 7, 8)),
    (nn.Conv2d(3, 5, 3, padding=1, padding_mode='reflect'), (1, 3, 6, 6)),
    (nn.Conv2d(3, 5, 3, stride=2), (3, 9, 10)),  # unbatched input
    (nn.Conv3d(3, 4, 3, stride=2, padding=1), (1, 3, 5, 6, 7)),
    (nn.Linear(6, 4), (2, 3, 6)),
    (nn.BatchNorm1d(6), (4, 6)),
    (nn.BatchNorm2d(3), (2, 3, 5, 5)),
    (OwnForwardConv(3, 4, 1), (1, 3, 4, 4)),
]


@pytest.mark.parametrize('layer,shape', LAYERS, ids=lambda v: type(v).__name__
                         if isinstance(v, nn.Module) else str(v))
def test_shapes_equal_the_real_forward(layer, shape):
    x = torch.randn(*shape)
    seen = []
    handle = layer.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    real = inference_forward(layer, x)
    fast = shape_forward(layer, x)
    handle.remove()
    assert fast.shape == real.shape and seen == [real.shape, real.shape]
    assert 'forward' not in layer.__dict__  # the stub is gone afterwards
    if isinstance(layer, OwnForwardConv):
        torch.testing.assert_close(fast, real)


def test_a_misfit_input_raises_the_real_error():
    with pytest.raises(RuntimeError):
        shape_forward(nn.Conv2d(3, 4, 3), torch.randn(1, 5, 8, 8))
    with pytest.raises(RuntimeError):
        shape_forward(nn.Conv2d(3, 4, 5), torch.randn(1, 3, 2, 2))  # smaller than the kernel


def l1_uniform_prune(depth, shape, round_to):
    torch.manual_seed(0)
    model = mmdet_backbones.ResNet(depth=depth)
    model.eval()  # mmdet's train() returns None
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    pruner = L1UniformPruner(target=dict(flops=0.5), num_steps=1, round_to=round_to, scope='')
    pruner.attach(model, x)
    pruner.step()
    masks = {n: m.clone() for n, m in pruner.masks.items()}
    slim_model(model, pruner.groups, pruner.masks)
    return pruner, masks, model


# kept widths of ResNet-50 at -50 % FLOPs, round_to=16, as the real-forward trace found them
# (they depend on shapes only, not on the random weights)
R50_WIDTHS = [32] * 6 + [64] + [80] * 7 + [144] * 12 + [272] * 6


@pytest.mark.parametrize('depth,shape,round_to', [(18, (1, 3, 64, 64), 1),
                                                  (50, (1, 3, 224, 224), 16)])
def test_l1_uniform_prune_equals_the_real_forward_trace(monkeypatch, depth, shape, round_to):
    fast, fast_masks, fast_model = l1_uniform_prune(depth, shape, round_to)
    monkeypatch.setattr(channel_groups, 'shape_forward', inference_forward)
    monkeypatch.setattr(channel_cost, 'shape_forward', inference_forward)
    real, real_masks, real_model = l1_uniform_prune(depth, shape, round_to)
    assert fast.groups == real.groups
    for metric in ('flops', 'params'):
        for a, b in zip(fast.cost_model._terms[metric], real.cost_model._terms[metric]):
            assert torch.equal(a, b)
    assert fast_masks.keys() == real_masks.keys()
    assert all(torch.equal(fast_masks[n], real_masks[n]) for n in real_masks)
    fast_state, real_state = fast_model.state_dict(), real_model.state_dict()
    assert fast_state.keys() == real_state.keys()
    assert all(torch.equal(fast_state[k], real_state[k]) for k in real_state)
    if depth == 50:
        assert [int(m.sum()) for m in fast_masks.values()] == R50_WIDTHS


@pytest.mark.parametrize('scope', ['', 'layer2'])
def test_cost_model_from_the_trace_equals_its_own_pass(monkeypatch, scope):
    torch.manual_seed(0)
    model = mmdet_backbones.ResNet(depth=18)
    x = torch.randn(2, 3, 48, 64)
    calls = []
    groups = channel_groups.find_channel_groups(model, x, layer_calls=calls)
    shared = channel_cost.ChannelCostModel(model, groups, x, scope, layer_calls=calls)
    own = channel_cost.ChannelCostModel(model, groups, x, scope)
    monkeypatch.setattr(channel_cost, 'shape_forward', inference_forward)
    real = channel_cost.ChannelCostModel(model, groups, x, scope)
    for metric in ('flops', 'params'):
        for a, b, c in zip(shared._terms[metric], own._terms[metric], real._terms[metric]):
            assert torch.equal(a, b) and torch.equal(a, c)
