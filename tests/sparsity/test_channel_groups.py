"""Channel dependency groups on real MMDetection / MMSegmentation backbones and toy models."""

import pytest
import torch
from torch import nn

from mmrecprune.sparsity import (BNScaleImportance, L1Importance, L2Importance, TaylorImportance,
                                 find_channel_groups, global_channel_masks, group_importances)

X = torch.randn(1, 3, 32, 32)


def mmdet_resnet(depth, **kwargs):
    from mmdet.models.backbones import ResNet
    return ResNet(depth=depth, base_channels=8, **kwargs)


def by_name(groups):
    return {g.name: g for g in groups}


def test_resnet18_internal_groups():
    groups = find_channel_groups(mmdet_resnet(18), X)
    assert [g.name for g in groups] == [f'layer{s}.{b}.conv1' for s in range(1, 5) for b in (0, 1)]
    g = by_name(groups)['layer2.0.conv1']
    assert g.kind == 'internal' and g.num_channels == 16 and g.outputs == ()
    assert g.members == [('layer2.0.conv1', 'conv_out'), ('layer2.0.bn1', 'bn'),
                         ('layer2.0.conv2', 'conv_in')]


@pytest.mark.parametrize('kwargs, extra', [
    (dict(), []),
    (dict(deep_stem=True, avg_down=True), ['stem.0', 'stem.3']),
])
def test_resnet50_internal_groups(kwargs, extra):
    groups = find_channel_groups(mmdet_resnet(50, **kwargs), X)
    expected = extra + [f'layer{s}.{b}.conv{c}' for s, n in zip(range(1, 5), (3, 4, 6, 3))
                        for b in range(n) for c in (1, 2)]
    assert [g.name for g in groups] == expected
    assert all(g.kind == 'internal' for g in groups)
    assert by_name(groups)['layer3.2.conv2'].members == [
        ('layer3.2.conv2', 'conv_out'), ('layer3.2.bn2', 'bn'), ('layer3.2.conv3', 'conv_in')]


def test_resnet50_residual_groups():
    groups = find_channel_groups(mmdet_resnet(50), X, prune_residual=True)
    res = [g for g in groups if g.kind == 'residual']
    assert [g.name for g in res] == [f'layer{s}.0.conv3' for s in range(1, 5)]
    assert [g.outputs for g in res] == [(0, ), (1, ), (2, ), (3, )]
    assert [g.num_channels for g in res] == [32, 64, 128, 256]
    stage1 = dict(res[0].members)
    for b in range(3):
        assert stage1[f'layer1.{b}.conv3'] == 'conv_out' and stage1[f'layer1.{b}.bn3'] == 'bn'
    assert stage1['layer1.0.downsample.0'] == 'conv_out'
    assert stage1['layer1.1.conv1'] == stage1['layer1.2.conv1'] == 'conv_in'
    assert stage1['layer2.0.conv1'] == stage1['layer2.0.downsample.0'] == 'conv_in'
    # the stem output feeds layer1.0.conv1 and its downsample: between blocks, not tied by an add
    stem = by_name(groups)['conv1']
    assert stem.kind == 'boundary'
    assert dict(stem.members) == {'conv1': 'conv_out', 'bn1': 'bn', 'layer1.0.conv1': 'conv_in',
                                  'layer1.0.downsample.0': 'conv_in'}


def test_resnet18_residual_stage_includes_stem():
    # layer1 of a BasicBlock ResNet has no downsample: the stem output is added to the residual
    groups = by_name(find_channel_groups(mmdet_resnet(18), X, prune_residual=True))
    stage1 = groups['conv1']
    assert stage1.kind == 'residual' and stage1.outputs == (0, )
    assert ('layer1.1.conv2', 'conv_out') in stage1.members
    assert groups['layer2.0.conv2'].outputs == (1, )


def test_resnet_avg_down_downsample_conv():
    groups = find_channel_groups(mmdet_resnet(50, deep_stem=True, avg_down=True), X,
                                 prune_residual=True)
    stage2 = by_name(groups)['layer2.0.conv3']
    assert ('layer2.0.downsample.1', 'conv_out') in stage2.members
    assert ('layer2.0.downsample.2', 'bn') in stage2.members
    assert by_name(groups)['stem.6'].kind == 'boundary'


def test_mmseg_resnetv1c():
    from mmseg.models.backbones import ResNetV1c
    model = ResNetV1c(depth=18, stem_channels=16, base_channels=8)
    groups = find_channel_groups(model, X)
    assert [g.name for g in groups] == ['stem.0', 'stem.3'] + [
        f'layer{s}.{b}.conv1' for s in range(1, 5) for b in (0, 1)]
    assert by_name(groups)['stem.0'].members == [('stem.0', 'conv_out'), ('stem.1', 'bn'),
                                                 ('stem.3', 'conv_in')]


def test_mobilenetv2_expansion_groups():
    from mmdet.models.backbones import MobileNetV2
    model = MobileNetV2(widen_factor=0.25)
    groups = find_channel_groups(model, X)
    # one group per inverted residual with expansion (all but layer1's block)
    assert len(groups) == 16 and all(g.kind == 'internal' for g in groups)
    g = by_name(groups)['layer2.1.expand_conv.conv']
    assert g.members == [('layer2.1.expand_conv.conv', 'conv_out'),
                         ('layer2.1.expand_conv.bn', 'bn'),
                         ('layer2.1.depthwise_conv.conv', 'dwconv'),
                         ('layer2.1.depthwise_conv.bn', 'bn'),
                         ('layer2.1.linear_conv.conv', 'conv_in')]
    wide = find_channel_groups(model, X, prune_residual=True)
    assert {g.kind for g in wide} == {'internal', 'residual', 'boundary'}
    assert by_name(wide)['conv2.conv'].outputs == (3, )  # the 1280-channel last conv is out 7


def test_squeeze_excitation_gate_stays_internal():
    from mmdet.models.layers import InvertedResidual
    model = nn.Sequential(nn.Conv2d(3, 16, 1),
                          InvertedResidual(16, 16, 48, se_cfg=dict(channels=48, ratio=4)))
    groups = find_channel_groups(model, X)
    assert [(g.name, g.kind) for g in groups] == [('1.expand_conv.conv', 'internal'),
                                                  ('1.se.conv1.conv', 'internal')]
    assert ('1.se.conv2.conv', 'conv_out') in groups[0].members
    assert ('1.se.conv1.conv', 'conv_in') in groups[0].members


def test_unprunable_axes_are_left_out():

    class Block(nn.Module):

        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(3, 4, 3, padding=1)
            self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)  # grouped, not depthwise
            self.c = nn.Conv2d(8, 6, 1)
            self.d = nn.Conv2d(6, 6, 1)
            self.register_buffer('scale', torch.ones(1, 6, 1, 1))  # broadcast along channels
            self.e = nn.Conv2d(6, 5, 1)
            self.h = nn.Conv2d(5, 5, 1)
            self.act = nn.PReLU(5)  # a layer with its own per-channel weights
            self.f = nn.Conv2d(5, 5, 1)

        def forward(self, x):
            y = torch.cat([self.a(x), self.b(x)], dim=1)  # concatenation: not sliced
            y = self.c(self.g(y))
            y = self.d(y) * self.scale
            z = self.e(y).relu()
            z = self.h(z.view(z.shape[0], 5, -1).view_as(z))  # reshapes keeping channels
            return self.f(self.act(z))

    model = nn.Sequential(Block())
    assert [g.name for g in find_channel_groups(model, X)] == ['0.c', '0.e']
    groups = find_channel_groups(model, X, prune_residual=True)
    assert [(g.name, g.kind, g.outputs) for g in groups][2:] == [('0.f', 'boundary', (0, ))]


def test_shared_module_ties_its_calls():

    class Shared(nn.Module):

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 1)
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.head(self.conv(self.conv(self.stem(x))))

    groups = find_channel_groups(nn.Sequential(Shared()), X, prune_residual=True)
    # the shared conv reads both the stem output and its own output: one tied axis
    assert [(g.name, g.kind) for g in groups] == [('0.stem', 'residual'), ('0.head', 'boundary')]
    assert groups[0].members == [('0.stem', 'conv_out'), ('0.conv', 'conv_out'),
                                 ('0.conv', 'conv_in'), ('0.head', 'conv_in')]


def test_importance_criteria():
    model = mmdet_resnet(18)
    group = find_channel_groups(model, X)[0]
    conv = model.layer1[0].conv1
    assert torch.allclose(L1Importance()(model, group), conv.weight.abs().sum((1, 2, 3)))
    assert torch.allclose(L2Importance()(model, group), conv.weight.pow(2).sum((1, 2, 3)).sqrt())
    with_inputs = L1Importance(include_inputs=True)(model, group)
    assert torch.allclose(with_inputs, conv.weight.abs().sum((1, 2, 3)) +
                          model.layer1[0].conv2.weight.abs().sum((0, 2, 3)))
    model.layer1[0].bn1.weight.data.uniform_(-1, 1)
    assert torch.equal(BNScaleImportance()(model, group), model.layer1[0].bn1.weight.abs())
    with pytest.raises(RuntimeError, match='backward'):
        TaylorImportance()(model, group)
    sum(o.sum() for o in model(X.repeat(2, 1, 1, 1))).backward()
    assert torch.allclose(TaylorImportance()(model, group),
                          (conv.weight * conv.weight.grad).abs().sum((1, 2, 3)))


def test_global_channel_masks_on_resnet50():
    """Global L1 masks over every group of a ResNet-50 remove the asked fraction of channels.
    (Their speed is measured by tools/benchmarks/bench_global_prune.py, not asserted here.)"""
    from mmdet.models.backbones import ResNet
    model = ResNet(depth=50)
    groups = find_channel_groups(model, X, prune_residual=True)
    masks = global_channel_masks(group_importances(model, groups, L1Importance()), 0.3)
    assert len(masks) == len(groups)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert abs((1 - kept / total) - 0.3) < 0.01
    assert all(m.any() for m in masks.values())
