"""Channel masks and physical slimming: the slim model computes exactly what the masked one did."""
import json
from functools import partial

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmrecprune.sparsity import (apply_channel_masks, apply_channel_structure,
                                 find_channel_groups, global_channel_masks,
                                 slim_model)
from tests.conftest import half_width_masks

X = torch.randn(2, 3, 32, 32)


def mmdet_resnet(depth, **kwargs):
    from mmdet.models.backbones import ResNet
    return ResNet(depth=depth, base_channels=8, **kwargs)


def mmseg_resnetv1c():
    from mmseg.models.backbones import ResNetV1c
    return ResNetV1c(depth=18, stem_channels=16, base_channels=8)


def mmdet_mobilenetv2():
    from mmdet.models.backbones import MobileNetV2
    return MobileNetV2(widen_factor=0.25)


def se_inverted_residuals():
    from mmdet.models.layers import InvertedResidual
    se = partial(dict, ratio=4)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1),
                         InvertedResidual(16, 16, 48, se_cfg=se(channels=48)),
                         InvertedResidual(16, 24, 64, stride=2, se_cfg=se(channels=64)))


BUILDERS = {
    'resnet18': partial(mmdet_resnet, 18),
    'resnet18_syncbn': partial(mmdet_resnet, 18, norm_cfg=dict(type='SyncBN')),
    'resnet50': partial(mmdet_resnet, 50),
    'resnet50_deep_stem_avg_down': partial(mmdet_resnet, 50, deep_stem=True, avg_down=True),
    'resnetv1c_mmseg': mmseg_resnetv1c,
    'mobilenetv2': mmdet_mobilenetv2,
    'se_inverted_residuals': se_inverted_residuals,
}


def build(name):
    torch.manual_seed(0)
    model = BUILDERS[name]()
    # non-trivial BN so that a pruned channel's BN shift would leak if it were not zeroed
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()  # mmdet's ResNet.train() returns None, so no chaining
    return model


def as_tuple(output):
    return (output, ) if isinstance(output, torch.Tensor) else output


@pytest.mark.parametrize('prune_residual', [False, True])
@pytest.mark.parametrize('name', list(BUILDERS))
def test_slim_equals_masked_dense(name, prune_residual):
    model = build(name)
    with torch.no_grad():
        original = as_tuple(model(X))
    groups = find_channel_groups(model, X, prune_residual=prune_residual)
    masks = half_width_masks(model, groups)
    apply_channel_masks(model, groups, masks)
    keys = list(model.state_dict())
    with torch.no_grad():
        dense = as_tuple(model(X))
    assert not torch.allclose(dense[-1], original[-1])

    structure = slim_model(model, groups, masks)
    assert list(model.state_dict()) == keys
    assert json.loads(json.dumps(structure)) == structure
    with torch.no_grad():
        slim = as_tuple(model(X))
    kept = {i: masks[g.name] for g in groups for i in g.outputs}
    assert bool(kept) == prune_residual
    for i, (d, s) in enumerate(zip(dense, slim)):
        if i in kept:  # a pruned residual stream: dropped channels were exactly zero
            assert torch.all(d[:, ~kept[i]] == 0)
            d = d[:, kept[i]]
        assert torch.allclose(d, s, atol=1e-5), f'output {i} differs'

    # a fresh dense model takes the structure and then the slim weights, strictly
    fresh = BUILDERS[name]()
    fresh.eval()
    apply_channel_structure(fresh, structure)
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        for s, f in zip(slim, as_tuple(fresh(X))):
            assert torch.equal(s, f)


def test_slimmed_layers_keep_their_settings():
    model = build('resnet18_syncbn')
    dw_model = build('mobilenetv2')
    for m in (model, dw_model):
        groups = find_channel_groups(m, X)
        slim_model(m, groups, half_width_masks(m, groups))
    conv, bn = model.layer2[0].conv1, model.layer2[0].bn1
    assert (conv.out_channels, conv.stride, conv.padding, conv.bias) == (8, (2, 2), (1, 1), None)
    assert conv.weight.shape == (8, 8, 3, 3)
    assert isinstance(bn, nn.SyncBatchNorm) and bn.num_features == 8 and bn.eps == 1e-5
    assert model.layer2[0].conv2.weight.shape == (16, 8, 3, 3)
    dw = dw_model.layer2[1].depthwise_conv.conv
    assert dw.groups == dw.in_channels == dw.out_channels == dw.weight.shape[0]
    assert dw.weight.shape[1] == 1 and dw.stride == (1, 1)


def test_global_channel_masks():
    scores = {'small': torch.arange(1., 9.) / 100, 'large': torch.arange(1., 9.)}
    masks = global_channel_masks(scores, 0.5, min_keep=2)
    # the 8 lowest are all in 'small', but it keeps its 2 best
    assert masks['small'].tolist() == [False] * 6 + [True] * 2
    assert int(masks['large'].sum()) == 6
    assert sum(int(m.sum()) for m in masks.values()) == 8
    rounded = global_channel_masks(scores, 0.5, round_to=4, min_keep=1)
    assert [int(m.sum()) for m in rounded.values()] == [4, 8]
    with pytest.raises(ValueError):
        global_channel_masks(scores, 1.0)


def test_slim_errors():
    model = build('resnet18')
    groups = find_channel_groups(model, X)
    name = groups[0].name
    with pytest.raises(ValueError, match='keeps no channel'):
        slim_model(model, groups, {name: torch.zeros(8, dtype=torch.bool)})
    with pytest.raises(ValueError, match='has 3 entries'):
        slim_model(model, groups, {name: torch.ones(3, dtype=torch.bool)})
    fresh = build('resnet18')
    with pytest.raises(ValueError, match="'layer9.conv'"):
        apply_channel_structure(fresh, {'layer9.conv': {'in': 4, 'out': 4}})
    with pytest.raises(ValueError, match='in == out'):
        apply_channel_structure(fresh, {'layer1.0.bn1': {'in': 4, 'out': 5}})
    with pytest.raises(ValueError, match='only covers'):
        apply_channel_structure(fresh, {'layer1.0': {'in': 4, 'out': 4}})
