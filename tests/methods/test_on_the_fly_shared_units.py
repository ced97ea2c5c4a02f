"""On-the-fly training with the unit filters normalised once per step (issue 22): the convs'
forward and the gap penalty share them, and the loss and every gradient equal a
straightforward per-layer implementation (each conv normalises its own weight, the penalty
normalises again and loops over layers) on a small ResNet classifier."""
import copy
import math
import types

import pytest
import torch

from mmrecprune.methods import OnTheFlyPruner
from mmrecprune.models import ImageClassifier
from mmrecprune.sparsity import HypersphericalConv2d, hyperspherical_convs, target_thresholds
from mmrecprune.sparsity.hyperspherical import SharedUnitFilters, unit_filter_list

pytestmark = pytest.mark.usefixtures('single_thread')
HYPER = dict(type='mmrecprune.HypersphericalConv')


def _classifier(seed=0):
    torch.manual_seed(seed)
    model = ImageClassifier(backbone=dict(type='mmdet.ResNet', depth=18, base_channels=8,
                                          out_indices=(3, ), conv_cfg=HYPER),
                            in_channels=64, num_classes=4).double()
    with torch.no_grad():  # uneven filter scales, one all-zero filter
        for conv in hyperspherical_convs(model).values():
            conv.weight.mul_(torch.rand(conv.weight.shape[0], 1, 1, 1, dtype=torch.float64)
                             * 3 + 0.1)
        hyperspherical_convs(model)['backbone.layer2.0.conv1'].weight[3] = 0
    return model


def reference_unit_filters(weight):
    norms = weight.flatten(1).norm(dim=1).clamp_min(1e-12)
    return weight / norms.view(-1, 1, 1, 1)


def reference_penalty(weights, thresholds, margin):
    terms = []
    for weight, border in zip(weights, thresholds):
        u = reference_unit_filters(weight).abs() * math.sqrt(weight[0].numel())
        target = u <= border
        terms.append((u * target).sum() / target.sum().clamp_min(1)
                     + (torch.relu(margin - u) * ~target).sum() / (~target).sum().clamp_min(1))
    return torch.stack(terms).mean()


def _reference_convs(model):
    """Each conv normalises its own weight with the per-layer definition."""
    for conv in hyperspherical_convs(model).values():
        conv.forward = types.MethodType(
            lambda self, x: self._conv_forward(x, reference_unit_filters(self.weight),
                                               self.bias), conv)


def _loss(model, seed=1):
    torch.manual_seed(seed)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3])
    return torch.nn.functional.cross_entropy(model(x, mode='tensor'), labels)


@pytest.mark.parametrize('margin', [0.5, 1.5])
def test_loss_and_gradients_equal_the_per_layer_reference(margin):
    ours, reference = _classifier(), _classifier()
    pruner = OnTheFlyPruner(sparsity=0.5, penalty=3.0, margin=margin)
    pruner.attach(ours)
    _reference_convs(reference)
    loss = pruner.regularize(_loss(ours))
    assert pruner._shared.units(pruner._conv_names) is not None  # the shared path ran
    # borders between entries (none sits on them), so float rounding cannot move an entry
    # across; the pruner's own borders are the k-th magnitudes (tested in test_gap_penalty)
    weights = [p for n, p in reference.named_parameters() if n in pruner.params]
    assert [n for n, _ in reference.named_parameters() if n in pruner.params] == list(
        pruner.params)
    borders = target_thresholds(weights, 0.5) * (1 + 1e-9)
    pruner.thresholds = borders.clone()
    loss = pruner.regularize(_loss(ours))
    expected = _loss(reference) + 3.0 * reference_penalty(weights, borders, margin)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    loss.backward()
    expected.backward()
    assert pruner._shared.units(pruner._conv_names) is None  # its graph is spent
    for (name, a), b in zip(ours.named_parameters(), reference.parameters()):
        assert a.grad is not None and torch.isfinite(a.grad).all(), name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-10,
                                   msg=lambda text: f"{name}: {text}")


def test_shared_units_are_refused_when_they_cannot_be_reused():
    model = _classifier()
    shared = SharedUnitFilters(model)
    names = list(shared.convs)
    assert shared.units(names) is None  # no forward yet
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32, dtype=torch.float64), mode='tensor')
    assert shared.units(names) is None  # computed without autograd, gradients wanted
    with torch.no_grad():
        assert len(shared.units(names)) == len(names)
    loss = _loss(model)
    units = shared.units(names)
    # the same bits as each conv normalising its own weight, with and without autograd
    for unit, conv in zip(units, shared.convs.values()):
        assert torch.equal(unit, unit_filter_list([conv.weight.detach()])[0])
        assert '_shared_unit' not in conv.__dict__  # taken back after the forward
    with torch.no_grad():
        shared.convs[names[0]].weight.mul_(2)  # a weight changed since the forward
    assert shared.units(names) is None and shared.units(names[1:]) is not None
    loss.backward()
    assert shared.units(names[1:]) is None  # backward ran: the graph is freed
    copy.deepcopy(model)  # an EMA copy does not copy the graph's tensors
    shared.remove()
    _loss(model)
    assert shared.units(names) is None


def test_frozen_stages_and_a_conv_called_outside_the_forward():
    model = _classifier()
    for p in model.backbone.layer1.parameters():
        p.requires_grad_(False)
    SharedUnitFilters(model)
    _loss(model).backward()
    assert all(p.grad is None for p in model.backbone.layer1.parameters())
    assert all(p.grad is not None for p in model.backbone.layer4.parameters())
    conv = model.backbone.layer4[0].conv1  # directly, outside the model's forward: its own
    x = torch.randn(1, conv.in_channels, 4, 4, dtype=torch.float64)
    out = conv(x)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(
        x, reference_unit_filters(conv.weight), None, conv.stride, conv.padding))


def test_the_cut_takes_the_sharing_off():
    model = _classifier()
    pruner = OnTheFlyPruner(sparsity=0.5, penalty=1.0)
    pruner.attach(model)
    pruner.regularize(_loss(model)).backward()
    pruner.step()
    assert pruner._shared is None and not hyperspherical_convs(model)
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert all(type(m) is not HypersphericalConv2d for m in model.modules())
    _loss(model).backward()
