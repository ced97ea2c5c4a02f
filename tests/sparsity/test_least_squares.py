"""Least-squares reconstruction and mean-value recovery of the layers that read cut channels,
on a real (small, randomly initialised, BN-calibrated) MMDetection ResNet-18."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones import ResNet
from torch import nn

from mmrecprune.sparsity import (apply_channel_masks, find_channel_groups, global_channel_masks,
                                 slim_model)
from mmrecprune.sparsity.bn_recalibration import recalibrate_batchnorm
from mmrecprune.sparsity.least_squares import (NormalEquations, following_norms,
                                               layer_output_error, layer_rows,
                                               reconstruct_consumers, solve_layer)

pytestmark = pytest.mark.usefixtures('single_thread')


def _data(seed, n=2, batch=16, size=32):
    g = torch.Generator().manual_seed(seed)
    # smooth images (a random image upsampled): neighbouring pixels correlate, as in photos
    return [F.interpolate(torch.randn(batch, 3, size // 4, size // 4, generator=g),
                          size=(size, size), mode='bilinear') for _ in range(n)]


@pytest.fixture(scope='module')
def resnet():
    torch.manual_seed(0)
    model = ResNet(depth=18, base_channels=8, out_indices=(3, ))
    recalibrate_batchnorm(model, _data(1))  # BN statistics that fit the data
    model.eval()
    return model


def _cut(model, ratio=0.5):
    groups = find_channel_groups(model, torch.randn(1, 3, 32, 32))
    scores = {g.name: torch.rand(g.num_channels, generator=torch.Generator().manual_seed(i))
              for i, g in enumerate(groups)}
    masks = global_channel_masks(scores, ratio)
    pruned = copy.deepcopy(model)
    apply_channel_masks(pruned, groups, masks)
    return groups, masks, pruned


def test_layer_rows_reproduce_the_conv():
    x = torch.randn(2, 6, 9, 11)
    for conv in (nn.Conv2d(6, 5, 3, padding=1), nn.Conv2d(6, 4, 3, stride=2, padding=2,
                                                          dilation=2, bias=False),
                 nn.Conv2d(6, 3, 1)):
        y = conv(x)
        rows = layer_rows(conv, x)
        out = rows @ conv.weight.flatten(1).T
        if conv.bias is not None:
            out = out + conv.bias
        expect = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])
        assert torch.allclose(out, expect, atol=1e-5)
        keep = torch.tensor([0, 2, 5])
        sub = layer_rows(conv, x, keep) @ conv.weight[:, keep].flatten(1).T
        y_sub = F.conv2d(x[:, keep], conv.weight[:, keep], None, conv.stride, conv.padding,
                         conv.dilation)
        assert torch.allclose(sub, y_sub.permute(0, 2, 3, 1).reshape(-1, y.shape[1]), atol=1e-5)


def test_solve_layer_finds_exact_weights_and_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 7, generator=g, dtype=torch.float64)
    w_true, shift_true = torch.randn(3, 7, generator=g, dtype=torch.float64), \
        torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    eq = NormalEquations()
    eq.add(x, x @ w_true.T + shift_true)
    w, shift = solve_layer(eq, torch.zeros(3, 7), True, True, ridge=0.0)
    assert torch.allclose(w, w_true, atol=1e-8) and torch.allclose(shift, shift_true, atol=1e-8)
    w, shift = solve_layer(eq, w_true, False, True)  # mean only: weights stay
    assert torch.equal(w, w_true) and torch.allclose(shift, shift_true, atol=1e-8)
    w, shift = solve_layer(eq, torch.zeros(3, 7), True, False, ridge=1e3)  # strong ridge: w0
    assert shift is None and w.abs().max() < 0.1 * w_true.abs().max()
    with pytest.raises(ValueError, match='no calibration rows'):
        solve_layer(NormalEquations(), w_true, True, True)


def test_following_norms_of_a_resnet(resnet):
    norms = following_norms(resnet, torch.randn(1, 3, 32, 32))
    assert norms['layer1.0.conv2'] == 'layer1.0.bn2'
    assert norms['conv1'] == 'bn1'
    assert norms['layer2.0.downsample.0'] == 'layer2.0.downsample.1'


def test_least_squares_lowers_the_layer_error_of_every_consumer(resnet):
    groups, masks, cut = _cut(resnet)
    calib, held_out = _data(2), _data(3)
    fitted = copy.deepcopy(cut)
    report = reconstruct_consumers(resnet, fitted, groups, masks, calib, 'least_squares',
                                   positions_per_image=32)
    consumers = [n for g in groups for n, k in g.members if k == 'conv_in']
    assert sorted(report) == sorted(consumers)
    ratios = {}
    for name in consumers:
        before = layer_output_error(resnet, cut, name, held_out)
        after = layer_output_error(resnet, fitted, name, held_out)
        assert after <= before * (1 + 1e-6), (name, before, after, report[name])
        ratios[name] = after / before
    # every layer is re-fitted (none keeps its weights) and the error falls on average
    assert all(r['ridge'] is not None for r in report.values()), report
    assert sum(ratios.values()) / len(ratios) < 0.9, ratios
    # the network's output too, on images the fit never saw
    with torch.no_grad():
        err = {k: (m(held_out[0])[0] - resnet(held_out[0])[0]).pow(2).mean()
               for k, m in (('cut', cut), ('ls', fitted))}
    assert err['ls'] < 0.8 * err['cut']


def test_mean_recovery_restores_the_next_norms_mean(resnet):
    groups, masks, cut = _cut(resnet)
    calib = _data(2, n=3)
    recovered = copy.deepcopy(cut)
    report = reconstruct_consumers(resnet, recovered, groups, masks, calib, 'mean')
    assert report['layer1.0.conv2']['shift'] == 'layer1.0.bn2.running_mean'
    # only the shift moved: the weights on kept channels are the dense ones
    keep = masks['layer1.0.conv1'].nonzero().flatten()
    assert torch.equal(recovered.layer1[0].conv2.weight[:, keep],
                       resnet.layer1[0].conv2.weight[:, keep])
    outs = {}

    def mean_of(model):
        h = model.layer1[0].bn2.register_forward_hook(
            lambda m, a, o: outs.__setitem__(id(model), o.mean((0, 2, 3))))
        with torch.no_grad():
            model(calib[0])
        h.remove()
        return outs[id(model)]

    dense, before, after = mean_of(resnet), mean_of(cut), mean_of(recovered)
    assert (after - dense).abs().mean() < 0.5 * (before - dense).abs().mean()


def test_reconstructed_model_slims_exactly(resnet):
    groups, masks, pruned = _cut(resnet)
    reconstruct_consumers(resnet, pruned, groups, masks, _data(2), 'least_squares+mean')
    slim = copy.deepcopy(pruned)
    slim_model(slim, groups, masks)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(pruned(x)[0], slim(x)[0], atol=1e-4)
    assert slim.layer1[0].conv2.in_channels == int(masks['layer1.0.conv1'].sum())


def test_bad_mode_and_no_batches(resnet):
    groups, masks, pruned = _cut(resnet)
    with pytest.raises(ValueError, match='reconstruction must be'):
        reconstruct_consumers(resnet, pruned, groups, masks, _data(2), 'lasso')
    with pytest.raises(ValueError, match='needs calibration batches'):
        reconstruct_consumers(resnet, pruned, groups, masks, [], 'mean')
