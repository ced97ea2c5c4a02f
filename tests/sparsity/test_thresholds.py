"""Tests of magnitude thresholds and the sparsity report."""
import math

import pytest
import torch
from mmdet.models.backbones import ResNet
from torch import nn
from torch.nn.utils import prune

from mmrecprune.sparsity import (global_magnitude_masks, global_magnitude_threshold, init_masks,
                                 layerwise_magnitude_masks, mask_overlap, plot_layer_sparsity,
                                 prunable_parameters, sparsity_report)


pytestmark = pytest.mark.usefixtures('single_thread')


def _resnet_params(seed=0):
    torch.manual_seed(seed)
    model = ResNet(depth=18, base_channels=8)
    return model, prunable_parameters(model)


def _num_pruned(masks):
    return sum(int((~m).sum()) for m in masks.values())


def _torch_targets(model, params):
    modules = dict(model.named_modules())
    return [(modules[name.rsplit('.', 1)[0]], 'weight') for name in params]


def test_global_masks_match_torch_prune_over_rounds():
    model, params = _resnet_params()
    targets = _torch_targets(model, params)
    masks = init_masks(params)
    for _ in range(3):  # iterative: each round prunes 20 % of the surviving weights
        masks = global_magnitude_masks(params, masks, 0.2)
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=0.2)
        for name, (module, _) in zip(params, targets):
            assert torch.equal(masks[name], module.weight_mask.bool()), name
    total = sum(p.numel() for p in params.values())
    expected = total
    for _ in range(3):
        expected -= round(0.2 * expected)
    assert total - _num_pruned(masks) == expected
    assert math.isclose(sparsity_report(masks)['sparsity'], 1 - 0.8 ** 3, abs_tol=1e-4)


def test_threshold_is_kth_smallest_surviving_magnitude():
    _, params = _resnet_params()
    masks = global_magnitude_masks(params, init_masks(params), 0.5)
    surviving = torch.cat([p.detach().abs()[masks[n]] for n, p in params.items()])
    k = round(0.3 * surviving.numel())
    threshold = global_magnitude_threshold(params, masks, 0.3)
    assert threshold == float(surviving.kthvalue(k).values)
    assert int((surviving <= threshold).sum()) == k  # no ties in random weights
    new_masks = global_magnitude_masks(params, masks, 0.3)
    assert _num_pruned(new_masks) - _num_pruned(masks) == k
    assert global_magnitude_threshold(params, masks, 0.0) == 0.0
    assert all(torch.equal(a, b) for a, b in
               zip(global_magnitude_masks(params, masks, 0.0).values(), masks.values()))


def test_inputs_not_modified_and_pruned_stay_pruned():
    _, params = _resnet_params()
    before = {n: p.detach().clone() for n, p in params.items()}
    masks = {n: torch.rand(p.shape) > 0.5 for n, p in params.items()}
    masks_before = {n: m.clone() for n, m in masks.items()}
    new_masks = global_magnitude_masks(params, masks, 0.2)
    assert all(torch.equal(params[n].detach(), before[n]) for n in params)
    assert all(torch.equal(masks[n], masks_before[n]) for n in params)
    assert all(not (new_masks[n] & ~masks[n]).any() for n in params)


@pytest.mark.parametrize('numel', [1000, (1 << 20) + 12345])
def test_exact_count_and_deterministic_ties(numel):
    """Heavy ties: exactly round(ratio * n) pruned, ties pruned first-in-order, repeatable."""
    torch.manual_seed(0)
    values = torch.randint(0, 20, (numel,)).float() - 10  # magnitudes 0..10, many ties
    params = {'a': values[:numel // 3].reshape(-1, 1), 'b': values[numel // 3:]}
    masks = init_masks(params)
    masks['a'][:5] = False
    surviving = numel - 5
    new_masks = global_magnitude_masks(params, masks, 0.37)
    assert _num_pruned(new_masks) - 5 == round(0.37 * surviving)
    again = global_magnitude_masks(params, masks, 0.37)
    assert all(torch.equal(new_masks[n], again[n]) for n in params)
    threshold = global_magnitude_threshold(params, masks, 0.37)
    flat_mag = values.abs()
    flat_keep = torch.cat([new_masks['a'].flatten(), new_masks['b']])
    flat_old = torch.cat([masks['a'].flatten(), masks['b']])
    assert (flat_mag[flat_keep] >= threshold).all()
    assert (flat_mag[flat_old & ~flat_keep] <= threshold).all()
    tied_pruned = (flat_mag == threshold) & flat_old & ~flat_keep
    tied_kept = (flat_mag == threshold) & flat_keep
    assert tied_pruned.nonzero().max() < tied_kept.nonzero().min()  # earlier ones pruned first


def test_large_selection_matches_torch_on_sorted_and_signed_data():
    """The sampled selection path (>= 2**20 values) on adversarial layouts."""
    torch.manual_seed(1)
    sorted_w = torch.randn(1 << 20).abs().sort().values  # sample is far from i.i.d.
    params = {'sorted': sorted_w, 'signed': torch.randn(300_000) * 3}
    masks = init_masks(params)
    masks['signed'][::2] = False
    for ratio in (0.01, 0.2, 0.9, 0.999):
        new_masks = global_magnitude_masks(params, masks, ratio)
        surviving = torch.cat([params[n].abs()[masks[n]] for n in params])
        k = round(ratio * surviving.numel())
        assert _num_pruned(new_masks) - _num_pruned(masks) == k
        assert global_magnitude_threshold(params, masks, ratio) == \
            float(surviving.kthvalue(k).values)


def test_layerwise_masks():
    model, params = _resnet_params()
    targets = _torch_targets(model, params)
    masks = layerwise_magnitude_masks(params, init_masks(params), 0.3)
    for name, (module, _) in zip(params, targets):
        prune.l1_unstructured(module, 'weight', amount=0.3)
        assert torch.equal(masks[name], module.weight_mask.bool()), name
    first, second = list(params)[:2]
    by_name = layerwise_magnitude_masks(params, masks, {first: 0.5})
    kept = int(masks[first].sum())
    assert int(by_name[first].sum()) == kept - round(0.5 * kept)
    assert torch.equal(by_name[second], masks[second])
    with pytest.raises(ValueError, match='not in params'):
        layerwise_magnitude_masks(params, masks, {'nope.weight': 0.1})
    with pytest.raises(ValueError, match=r'ratio of .*\[0, 1\)'):
        layerwise_magnitude_masks(params, masks, {first: 1.2})


@pytest.mark.parametrize('ratio', [-0.1, 1.0, 1.5, float('nan'), '0.2', None, True])
def test_bad_ratio(ratio):
    _, params = _resnet_params()
    for fn in (global_magnitude_masks, global_magnitude_threshold, layerwise_magnitude_masks):
        with pytest.raises(ValueError, match=r'\[0, 1\)'):
            fn(params, init_masks(params), ratio)


def test_bad_params_and_masks():
    _, params = _resnet_params()
    with pytest.raises(ValueError, match='params is empty'):
        global_magnitude_masks({}, {}, 0.2)
    masks = init_masks(params)
    name = next(iter(params))
    masks[name] = masks[name][:, :1]
    with pytest.raises(ValueError, match=f'mask of {name!r} has shape'):
        global_magnitude_masks(params, masks, 0.2)
    with pytest.raises(ValueError, match='missing masks'):
        global_magnitude_threshold(params, {}, 0.2)


def test_sparsity_report_and_plot(tmp_path):
    pytest.importorskip('matplotlib')
    masks = {'a': torch.tensor([True, False, False, False]), 'b': torch.ones(2, 2, dtype=bool)}
    report = sparsity_report(masks)
    assert report['layers']['a'] == dict(kept=1, total=4, sparsity=0.75)
    assert report['layers']['b'] == dict(kept=4, total=4, sparsity=0.0)
    assert (report['kept'], report['total'], report['sparsity']) == (5, 8, 0.375)
    assert sparsity_report({})['sparsity'] == 0.0
    path = tmp_path / 'sparsity.png'
    plot_layer_sparsity(report, str(path))
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_mask_overlap_between_two_tickets():
    a = {'x': torch.tensor([True, True, False, False]), 'y': torch.tensor([True, False])}
    b = {'x': torch.tensor([True, False, True, False]), 'y': torch.tensor([True, False])}
    overlap = mask_overlap(a, b)
    assert overlap['layers']['x'] == dict(jaccard=1 / 3, shared=0.5)
    assert overlap['layers']['y'] == dict(jaccard=1.0, shared=1.0)
    assert (overlap['jaccard'], overlap['shared']) == (2 / 4, 2 / 3)
    with pytest.raises(ValueError, match='different parameters'):
        mask_overlap(a, {'x': b['x']})
    with pytest.raises(ValueError, match="'y': mask shapes differ|y: mask shapes differ"):
        mask_overlap(a, dict(b, y=torch.ones(3, dtype=bool)))


def test_works_on_plain_module_without_mmdet_names():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(),
                          nn.Linear(8, 2))
    params = prunable_parameters(model, exclude=())
    masks = global_magnitude_masks(params, init_masks(params), 0.5)
    assert _num_pruned(masks) == round(0.5 * (8 * 3 * 9 + 8 * 8 * 9))
