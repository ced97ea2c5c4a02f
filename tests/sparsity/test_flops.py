"""The FLOPs (= MACs) / params counter against hand-computed numbers."""
import pytest
import torch
from torch import nn

from mmrecprune.sparsity import (count_flops_params, find_channel_groups, inference_forward,
                                 slim_model)
from tests.conftest import half_width_masks


def test_conv_bn_linear_analytic():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 8x8 out: 64 * 8 * 27 MACs
        nn.BatchNorm2d(8),  # 8 * 64 elements
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # depthwise: 64 * 8 * 9
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10))  # 80
    flops, params = count_flops_params(model, (2, 3, 16, 16))
    per_image = 64 * 8 * 27 + 8 * 64 + 64 * 8 * 9 + 80
    assert flops == 2 * per_image
    assert params == (8 * 27 + 8) + 16 + 72 + (80 + 10)


def test_nonzero_only_counts_surviving_weights():
    model = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.Linear(6, 3, bias=False))
    with torch.no_grad():
        model[0].weight[:2] = 0
        model[1].weight[0] = 0
    dense = count_flops_params(model, (1, 4, 5, 6))
    sparse = count_flops_params(model, (1, 4, 5, 6), nonzero_only=True)
    assert dense == (30 * 16 + 20 * 18, 16 + 18)
    assert sparse == (30 * 8 + 20 * 12, 8 + 12)


def test_counting_leaves_training_state_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = model[1].running_mean.clone()
    count_flops_params(model, (2, 3, 8, 8))
    assert model.training and model[1].training
    assert torch.equal(model[1].running_mean, before)
    assert inference_forward(model, torch.randn(1, 3, 8, 8)).requires_grad is False


def test_resnet18_full_width_matches_published():
    from mmdet.models.backbones import ResNet
    flops, params = count_flops_params(ResNet(depth=18), (1, 3, 224, 224))
    # 1.81 GMACs for the convolutions (ImageNet ResNet-18 is 1.82 G including the FC layer),
    # plus about 2.3 M BN elements; 11.18 M parameters without the FC layer
    assert flops == pytest.approx(1.816e9, rel=0.01)
    assert params == 11176512


def test_slimmed_resnet18_matches_analytic():
    from mmdet.models.backbones import ResNet
    c, size = 8, 64
    model = ResNet(depth=18, base_channels=c)
    dense, _ = count_flops_params(model, (1, 3, size, size))
    # halving every BasicBlock's inner width (conv1 out) halves each block's conv1 and conv2 MACs
    # and its bn1 elements, and nothing else
    block_macs, cin, s = 0, c, size // 4
    for stage in range(4):
        width = c * 2**stage
        s = s if stage == 0 else s // 2
        for block in range(2):
            block_in = cin if block == 0 else width
            block_macs += s * s * width * (9 * block_in + 9 * width + 1)
        cin = width
    groups = find_channel_groups(model, torch.randn(1, 3, size, size))
    slim_model(model, groups, half_width_masks(model, groups))
    slim, _ = count_flops_params(model, (1, 3, size, size))
    assert slim == dense - block_macs // 2
