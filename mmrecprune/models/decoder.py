"""The reconstruction decoder of RecPrune: an "inverse ResNet" with feature-map hints.

Speed (issue 22): the decoder runs in the channels-last memory format (PyTorch's CPU
convolutions and bilinear upsampling are about twice as fast on it at these widths), and a BN in
eval mode (the decoder frozen in RecPrune's pruning stage) is folded into the conv before it
for the forward (one pass fewer over every activation, forward and backward). Both compute the
same function (up to float rounding); the parameters and the state_dict are unchanged.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from mmrecprune.registry import MODELS


def conv_bn(conv, bn, x):
    """``bn(conv(x))``; with ``bn`` in eval mode as one conv whose weight and bias hold the BN
    (the same function up to float rounding, one pass fewer over the output)."""
    if bn.training or bn.running_var is None:
        return bn(conv(x))
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = -bn.running_mean * scale
    if bn.bias is not None:
        bias = bias + bn.bias
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    weight = conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    return conv._conv_forward(x, weight, bias)


class _DecoderBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a (1x1-projected) shortcut, then ReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = F.relu(conv_bn(self.conv1, self.bn1, x), inplace=True)
        out = conv_bn(self.conv2, self.bn2, out)
        shortcut = x if isinstance(self.shortcut, nn.Identity) else conv_bn(
            self.shortcut[0], self.shortcut[1], x)
        return F.relu(out + shortcut, inplace=True)


@MODELS.register_module()
class InverseResNetDecoder(BaseModule):
    """Maps the encoder's stage features back to the input image.

    Decoder stage ``i`` (i = 4, 3, 2, 1) mirrors encoder stage ``i``: it works at the
    resolution of the encoder feature ``f_i`` and outputs ``g_i`` with ``f_i``'s shape. The
    deepest stage takes ``f_4``; every other stage first upsamples its input to the next
    shallower feature's size. For a stage in ``hint_stages`` the decoder passes
    ``(1 - t) * g_i + t * f_i`` on instead of ``g_i`` (the feature-map hint). A final head
    upsamples to the input size and predicts the (normalised) image.

    Args:
        in_channels (Sequence[int]): channels of encoder stages 1..4, e.g. ``(16, 32, 64, 128)``.
        hint_stages (Sequence[int]): encoder stages (1-based) whose features are mixed in.
            Defaults to ``(3, 4)``, the paper's best choice.
        hint_weight (float): t. Defaults to 0.1.
        blocks_per_stage (int): residual blocks per decoder stage. Defaults to 1.
        out_channels (int): channels of the reconstructed image. Defaults to 3.
    """

    def __init__(self, in_channels, hint_stages=(3, 4), hint_weight=0.1, blocks_per_stage=1,
                 out_channels=3, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.in_channels = tuple(in_channels)
        num_stages = len(self.in_channels)
        if not 0.0 <= hint_weight <= 1.0:
            raise ValueError(f'hint_weight (t) must be in [0, 1], got {hint_weight}')
        bad = [s for s in hint_stages if not 1 <= s <= num_stages]
        if bad:
            raise ValueError(f'hint_stages {bad} out of range 1..{num_stages}')
        self.hint_stages = tuple(hint_stages)
        self.hint_weight = hint_weight
        self.stages = nn.ModuleList()
        # stages[0] mirrors the deepest encoder stage
        for i in reversed(range(num_stages)):
            c_in = self.in_channels[min(i + 1, num_stages - 1)]
            c_out = self.in_channels[i]
            blocks = [_DecoderBlock(c_in, c_out)]
            blocks += [_DecoderBlock(c_out, c_out) for _ in range(blocks_per_stage - 1)]
            self.stages.append(nn.Sequential(*blocks))
        c0 = self.in_channels[0]
        self.head = nn.Sequential(
            nn.Conv2d(c0, c0, 3, padding=1, bias=False), nn.BatchNorm2d(c0), nn.ReLU(inplace=True),
            nn.Conv2d(c0, out_channels, 3, padding=1))

    def forward(self, feats, out_size):
        """``feats``: encoder outputs of stages 1..4; returns an image of ``out_size``."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f'decoder expects {len(self.in_channels)} encoder features '
                             f'(backbone out_indices must cover all stages), got {len(feats)}')
        channels_last = torch.channels_last
        x = feats[-1].contiguous(memory_format=channels_last)
        t = self.hint_weight
        for depth, stage in enumerate(self.stages):
            stage_idx = len(feats) - 1 - depth  # 0-based encoder stage mirrored here
            target = feats[stage_idx]
            if x.shape[-2:] != target.shape[-2:]:
                x = F.interpolate(x, size=target.shape[-2:], mode='bilinear',
                                  align_corners=False)
            x = stage(x)
            if stage_idx + 1 in self.hint_stages:
                x = (1 - t) * x + t * target.contiguous(memory_format=channels_last)
        x = F.interpolate(x, size=out_size, mode='bilinear', align_corners=False)
        x = F.relu(conv_bn(self.head[0], self.head[1], x), inplace=True)
        return self.head[3](x)
