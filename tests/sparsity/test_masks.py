"""Tests of the unstructured mask primitives (selection, application, rewinding, packing)."""
import numpy as np
import pytest
import torch
from mmdet.models.backbones import ResNet
from torch import nn

from mmrecprune.sparsity import (apply_masks, check_masks, init_masks, name_matches, pack_mask,
                                 prunable_parameters, rewind, unpack_mask)


pytestmark = pytest.mark.usefixtures('single_thread')


def _resnet(**kwargs):
    torch.manual_seed(0)
    return ResNet(depth=18, base_channels=8, **kwargs)


class _Classifier(nn.Module):
    """Backbone under ``backbone.``, plus a conv decoder and an FC head (like RecPrune's)."""

    def __init__(self, **kwargs):
        super().__init__()
        self.backbone = _resnet(**kwargs)
        self.decoder = nn.Sequential(nn.Conv2d(64, 3, 1), nn.BatchNorm2d(3))
        self.head = nn.Linear(64, 10)


def _num_convs(module):
    return sum(isinstance(m, nn.Conv2d) for m in module.modules())


def test_prunable_parameters_bare_resnet_excludes_stem_norm_fc():
    model = _resnet()
    params = prunable_parameters(model)
    assert 'conv1.weight' not in params
    assert 'layer1.0.conv1.weight' in params  # block convs named conv1 are not the stem
    assert 'layer2.0.downsample.0.weight' in params
    assert len(params) == _num_convs(model) - 1
    assert all(p.dim() == 4 for p in params.values())
    assert all(params[n] is p for n, p in model.named_parameters() if n in params)


def test_prunable_parameters_backbone_prefix():
    model = _Classifier()
    params = prunable_parameters(model)
    # The default exclusion also finds the stem under ``backbone.``; decoder convs are included
    # unless the caller restricts ``include``; FC and norm layers never are.
    assert 'backbone.conv1.weight' not in params
    assert 'decoder.0.weight' in params
    assert not any(n.startswith('head') or '.bn' in n for n in params)

    backbone_only = prunable_parameters(model, include=('backbone.*',))
    assert 'decoder.0.weight' not in backbone_only
    assert list(backbone_only) == ['backbone.' + n for n in prunable_parameters(model.backbone)]
    # full-name patterns work too
    assert prunable_parameters(model, include='backbone.*', exclude='backbone.conv1.*') == \
        backbone_only
    assert set(prunable_parameters(model, include=('layer4.*',))) == {
        n for n in backbone_only if n.startswith('backbone.layer4.')}


def test_prunable_parameters_deep_stem_and_module_types():
    model = _resnet(deep_stem=True)
    params = prunable_parameters(model)
    assert not any(n.startswith('stem.') for n in params)
    assert len(params) == _num_convs(model) - 3  # the three stem convs

    head = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 4))
    assert list(prunable_parameters(head, exclude=())) == ['0.weight']
    assert list(prunable_parameters(head, exclude=(), module_types=(nn.Linear,))) == ['1.weight']


def test_name_matches_rule():
    assert name_matches('conv1.weight', ['conv1.*'])
    assert name_matches('backbone.conv1.weight', ['conv1.*'])
    assert name_matches('model.backbone.stem.0.conv.weight', ['stem.*'])
    assert not name_matches('layer1.0.conv1.weight', ['conv1.*'])
    assert not name_matches('decoder.conv1.weight', ['conv1.*'])
    assert not name_matches('backbone.conv1.weight', ['conv1.*'], anchor=None)
    assert name_matches('backbone.conv1.weight', ['backbone.conv1.*'], anchor=None)


def test_init_and_apply_masks_zero_exactly():
    params = prunable_parameters(_resnet())
    masks = init_masks(params)
    assert all(m.dtype == torch.bool and m.all() and m.shape == params[n].shape
               for n, m in masks.items())
    name = 'layer1.0.conv2.weight'
    p = params[name]
    with torch.no_grad():
        p[0, 0, 0, 0] = float('nan')
        p[0, 0, 0, 1] = float('inf')
    mask = torch.rand(p.shape) > 0.5
    mask[0, 0, 0, :2] = False
    before = p.detach().clone()
    apply_masks({name: p}, {name: mask})
    assert torch.equal(p.detach()[~mask], torch.zeros(int((~mask).sum())))
    assert torch.equal(p.detach()[mask], before[mask])
    assert not p.requires_grad or p.grad is None  # no autograd history was recorded

    # works on any tensors of the same shape (e.g. gradients); tensors without a mask untouched
    grads = {name: torch.ones(p.shape), 'other': torch.ones(3)}
    apply_masks(grads, {name: mask})
    assert torch.equal(grads[name], mask.float()) and torch.equal(grads['other'], torch.ones(3))


def test_apply_and_check_masks_errors():
    params = prunable_parameters(_resnet())
    masks = init_masks(params)
    name = next(iter(params))
    with pytest.raises(ValueError, match='no tensor'):
        apply_masks({}, {name: masks[name]})
    with pytest.raises(ValueError, match='shape'):
        apply_masks({name: params[name]}, {name: masks[name].flatten()})
    with pytest.raises(ValueError, match='missing masks'):
        check_masks(params, {})
    with pytest.raises(ValueError, match='dtype'):
        check_masks(params, {n: m.float() for n, m in masks.items()})
    bad = dict(masks, **{name: masks[name][:1]})
    with pytest.raises(ValueError, match=name):
        check_masks(params, bad)


def test_rewind_restores_survivors_keeps_pruned_zero():
    params = prunable_parameters(_resnet())
    reference = {n: p.detach().clone() for n, p in params.items()}
    masks = {n: torch.rand(p.shape) > 0.3 for n, p in params.items()}
    with torch.no_grad():
        for p in params.values():
            p.add_(1.0)  # "fine-tuned" weights
    rewind(params, reference, masks)
    for n, p in params.items():
        assert torch.equal(p.detach(), torch.where(masks[n], reference[n], 0.0))
    with pytest.raises(ValueError, match='no reference'):
        rewind(params, {}, masks)


@pytest.mark.parametrize('shape', [(0,), (1,), (7,), (8,), (9,), (13, 5, 3, 3), (3, 1, 1, 17)])
def test_pack_unpack_round_trip(shape):
    torch.manual_seed(sum(shape))
    mask = torch.rand(shape) > 0.5
    packed = pack_mask(mask)
    numel = int(np.prod(shape))
    assert packed.dtype == torch.uint8 and packed.shape == ((numel + 7) // 8,)
    assert np.array_equal(packed.numpy(), np.packbits(mask.numpy()))
    assert torch.equal(unpack_mask(packed, shape), mask)
    assert torch.equal(unpack_mask(pack_mask(~mask), shape), ~mask)


def test_pack_unpack_errors():
    with pytest.raises(ValueError, match='torch.bool'):
        pack_mask(torch.ones(3))
    with pytest.raises(ValueError, match='needs 2'):
        unpack_mask(torch.zeros(3, dtype=torch.uint8), (3, 3))
    with pytest.raises(ValueError, match='uint8'):
        unpack_mask(torch.zeros(2), (3, 3))
