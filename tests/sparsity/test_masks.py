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


# -- fill values (ticket format v2) hold exactly after every optimizer step --------------------
def _filled_net():
    """Four convs pruned 60 %: fills per layer ([]), per filter ([C_out, 1, 1, 1]), per entry
    (the weight's shape, as 'filter_abs_signed' makes them), and one zero-filled (v1) layer."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                        nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    params = {n: p for n, p in net.named_parameters() if n.endswith('weight')}
    masks = {n: torch.rand(p.shape) > 0.6 for n, p in params.items()}
    w = {n: p.detach() for n, p in params.items()}
    fills = {'0.weight': torch.tensor(0.0375),
             '2.weight': w['2.weight'].abs().mean(dim=(1, 2, 3), keepdim=True) + 0.01,
             '4.weight': torch.sign(w['4.weight']) * 0.05}
    return net, params, masks, fills


def _optimizer(kind, net):
    if kind == 'sgd':
        return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-2,
                               nesterov=True)
    if kind == 'adam':
        return torch.optim.Adam(net.parameters(), lr=0.01, weight_decay=5e-2)
    return torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=5e-2)


def _assert_exact(state, masks, fills, step):
    for name, mask in masks.items():
        held = state[name]
        fill = torch.broadcast_to(fills.get(name, torch.zeros(())).to(held.dtype), mask.shape)
        assert torch.equal(held[~mask], fill[~mask]), (
            f'after step {step}: {name} drifted by {(held[~mask] - fill[~mask]).abs().max()}')


@pytest.mark.parametrize('optimizer_kind', ['sgd', 'adam', 'adamw'])
@pytest.mark.parametrize('path', ['ticket', 'pruner'])
def test_fills_exact_in_state_dict_right_after_every_step(path, optimizer_kind):
    """A state_dict taken right after a step (no forward since: where a checkpoint hook saves)
    holds every pruned entry at its fill exactly, after each of k steps; kept entries train.
    ``ticket``: freeze_masks (a ticket backbone under a plain optimizer); ``pruner``: the
    WeightMasks calls the pruning optimizer wrapper makes around each step."""
    from mmrecprune.sparsity import WeightMasks, freeze_masks
    net, params, masks, fills = _filled_net()
    if path == 'ticket':
        handles = freeze_masks(params, masks, fills, owner=net)
    else:
        enforced = WeightMasks(params, masks, fills)
        enforced.apply()
    _assert_exact(net.state_dict(), masks, fills, 0)
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer = _optimizer(optimizer_kind, net)
    for step in range(1, 5):
        optimizer.zero_grad()
        net(torch.randn(2, 3, 9, 9)).square().mean().backward()
        if path == 'pruner':
            enforced.zero_gradients()
        optimizer.step()
        if path == 'pruner':
            enforced.apply()
        _assert_exact(net.state_dict(), masks, fills, step)
    assert all(not torch.equal(p.detach()[masks[n]], before[n][masks[n]])
               for n, p in params.items())
    if path == 'ticket':  # removing the handles lets the pruned entries train again
        for handle in handles:
            handle.remove()
        optimizer.zero_grad()
        net(torch.randn(2, 3, 9, 9)).square().mean().backward()
        optimizer.step()
        assert not torch.equal(params['2.weight'].detach()[~masks['2.weight']],
                               torch.broadcast_to(fills['2.weight'], (8, 8, 3, 3))[
                                   ~masks['2.weight']])


def test_fills_of_another_dtype_are_held_in_the_weight_dtype():
    """Fill values computed in float64 are held as the float32 weight rounds them, every step."""
    from mmrecprune.sparsity import WeightMasks, freeze_masks
    for path in ('ticket', 'pruner'):
        net, params, masks, fills = _filled_net()
        fills64 = {n: (f.double() + 1e-9) for n, f in fills.items()}
        if path == 'ticket':
            freeze_masks(params, masks, fills64, owner=net)
        else:
            enforced = WeightMasks(params, masks, fills64)
            enforced.apply()
        optimizer = _optimizer('sgd', net)
        net(torch.randn(2, 3, 9, 9)).square().mean().backward()
        optimizer.step()
        if path == 'pruner':
            enforced.apply()
        _assert_exact(net.state_dict(), masks, fills64, 1)


def test_frozen_fills_touch_only_the_optimizers_that_step_them_and_do_not_leak():
    """The step post-hook acts for an optimizer holding the masked weights, not for others; a
    ticket model that is dropped is freed (the hook keeps no reference to it)."""
    import gc
    import weakref

    from mmrecprune.sparsity import freeze_masks
    net, params, masks, fills = _filled_net()
    freeze_masks(params, masks, fills, owner=net)
    other = nn.Linear(3, 3)
    with torch.no_grad():  # a pruned entry set off by hand: only a step of `net` restores it
        params['0.weight'][~masks['0.weight']] += 1
    other(torch.randn(2, 3)).sum().backward()
    torch.optim.SGD(other.parameters(), lr=0.1).step()
    assert not torch.equal(params['0.weight'][~masks['0.weight']],
                           torch.broadcast_to(fills['0.weight'], masks['0.weight'].shape)[
                               ~masks['0.weight']])
    torch.optim.SGD(net.parameters(), lr=0.1).step()  # no gradients: only the hook acts
    _assert_exact(net.state_dict(), masks, fills, 1)
    ref = weakref.ref(params['2.weight'])
    del net, params
    gc.collect()
    assert ref() is None


def test_frozen_fills_follow_the_model_when_it_moves():
    """A ticket backbone is built (and its masks frozen) before the runner moves the model to
    its device; the cached masks and fills follow. A dtype change takes the same path here
    (no GPU needed): after ``.double()`` the fills are held exactly in float64."""
    from mmrecprune.sparsity import freeze_masks
    net, params, masks, fills = _filled_net()
    freeze_masks(params, masks, fills, owner=net)
    net.double()
    optimizer = _optimizer('adamw', net)
    for step in range(1, 3):
        optimizer.zero_grad()
        net(torch.randn(2, 3, 9, 9, dtype=torch.float64)).square().mean().backward()
        assert not net[2].weight.grad[~masks['2.weight']].any()
        optimizer.step()
        assert net[2].weight.dtype == torch.float64
        _assert_exact(net.state_dict(), masks, {n: f.float() for n, f in fills.items()}, step)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_zeroing_by_bits_is_masked_fill_exactly(dtype):
    """The optimizer wrappers' hot path (a bitwise AND) gives what masked_fill_ gives: +0 at
    pruned entries whatever they held (nan, inf, -0), kept entries bit for bit."""
    from mmrecprune.sparsity.masks import keep_bits, zero_pruned_bits_
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=dtype)
    x[0, :4] = torch.tensor([float('nan'), float('inf'), -float('inf'), -0.0], dtype=dtype)
    x = x.t()  # not contiguous
    mask = torch.rand(x.shape) > 0.5
    mask[:4, 0] = False
    expected = x.masked_fill(~mask, 0)
    zero_pruned_bits_([x], [keep_bits(mask, dtype)])
    assert torch.equal(x.view(keep_bits(mask, dtype).dtype),
                       expected.view(keep_bits(mask, dtype).dtype))
