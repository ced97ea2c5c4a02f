"""Hyperspherical convs: unit-norm filters inside mmdet backbones, folded back exactly."""
import pytest
import torch
from torch import nn

from mmrecprune.registry import MODELS
from mmrecprune.sparsity import (HypersphericalConv2d, fold_conv, fold_hyperspherical,
                                 hyperspherical_convs, make_hyperspherical, strip_conv_cfg,
                                 unit_filters)

pytestmark = pytest.mark.usefixtures('single_thread')
HYPER = dict(type='mmrecprune.HypersphericalConv')


def _trained_like(net, seed=0):
    """Random weights at uneven filter scales and non-trivial BN statistics."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(torch.rand(m.weight.shape[0], 1, 1, 1) * 3 + 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    net.eval()  # mmdet's ResNet.train() returns None, so no chaining
    return net


@pytest.mark.parametrize('cfg', [
    dict(type='mmdet.ResNet', depth=18, base_channels=8, out_indices=(1, 3), conv_cfg=HYPER),
    dict(type='mmdet.MobileNetV2', widen_factor=0.25, out_indices=(2, 7), conv_cfg=HYPER)],
    ids=['resnet', 'mobilenetv2'])
def test_conv_cfg_builds_hyperspherical_convs_and_folding_keeps_the_function(cfg):
    net = _trained_like(MODELS.build(cfg))
    convs = hyperspherical_convs(net)
    assert convs and all(type(m) is HypersphericalConv2d for m in convs.values())
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in net.modules())  # stem too
    keys = list(net.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        scaled = {n: m.weight.clone() for n, m in convs.items()}
        for m in convs.values():  # a filter's scale does not matter, only its direction
            m.weight.mul_(7.0)
        torch.testing.assert_close(net(x), before)
    folded = fold_hyperspherical(net)
    assert sorted(folded) == sorted(convs)
    assert not hyperspherical_convs(net)
    assert all(type(m) is nn.Conv2d for m in convs.values())
    assert list(net.state_dict()) == keys  # same parameter names: an ordinary backbone
    with torch.no_grad():
        after = net(x)
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for n, m in convs.items():
        torch.testing.assert_close(m.weight, unit_filters(scaled[n]))
    # the folded weights load into the dense backbone without the plugin conv
    plain = MODELS.build(strip_conv_cfg(cfg))
    plain.eval()
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        for a, b in zip(plain(x), before):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_unit_filters_and_zero_filters():
    w = torch.randn(4, 3, 3, 3)
    w[2] = 0
    u = unit_filters(w)
    norms = u.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms[[0, 1, 3]], torch.ones(3))
    assert torch.equal(u[2], torch.zeros_like(u[2]))  # an all-zero filter stays zero


def test_folding_refuses_what_it_cannot_fold():
    with pytest.raises(TypeError, match='folds a HypersphericalConv2d; got Conv2d'):
        fold_conv(nn.Conv2d(3, 4, 3))
    with pytest.raises(TypeError, match='got Linear'):
        fold_conv(nn.Linear(3, 4))
    net = MODELS.build(dict(type='mmdet.ResNet', depth=18, base_channels=8))
    with pytest.raises(ValueError, match='no hyperspherical convs to fold'):
        fold_hyperspherical(net)


def test_make_hyperspherical_keeps_parameters():
    net = MODELS.build(dict(type='mmdet.ResNet', depth=18, base_channels=8))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = [id(p) for p in net.parameters()]
    changed = make_hyperspherical(net)
    assert len(changed) == len(hyperspherical_convs(net)) > 0
    assert [id(p) for p in net.parameters()] == params  # an optimizer keeps working
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_strip_conv_cfg_only_removes_the_hyperspherical_type():
    cfg = dict(type='mmdet.ResNet', depth=18, conv_cfg=HYPER)
    assert 'conv_cfg' not in strip_conv_cfg(cfg) and 'conv_cfg' in cfg
    other = dict(type='mmdet.ResNet', depth=18, conv_cfg=dict(type='DCNv2'))
    assert strip_conv_cfg(other) == other


def test_why_not_parametrize_the_two_measured_reasons():
    """The reasons the module docstring gives for a conv class over torch's parametrize, kept
    true: a parametrization renames the weight in the state_dict (checkpoints of the same config
    stop lining up) and MMEngine's kaiming_init writes into a temporary (init silently lost)."""
    from mmengine.model import kaiming_init
    from torch.nn.utils import parametrize

    class Unit(nn.Module):
        def forward(self, w):
            return unit_filters(w)

    conv = nn.Conv2d(3, 4, 3)
    parametrize.register_parametrization(conv, 'weight', Unit())
    assert 'weight' not in conv.state_dict()
    assert 'parametrizations.weight.original' in conv.state_dict()
    before = conv.parametrizations.weight.original.detach().clone()
    kaiming_init(conv)
    assert torch.equal(conv.parametrizations.weight.original, before)  # init did not land
    ours = HypersphericalConv2d(3, 4, 3)
    assert 'weight' in ours.state_dict()
    before = ours.weight.detach().clone()
    kaiming_init(ours)
    assert not torch.equal(ours.weight, before)
