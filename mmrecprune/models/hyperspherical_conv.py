"""``mmrecprune.HypersphericalConv``: the unit-norm conv of on-the-fly pruning, for a backbone's
``conv_cfg`` (mmdet's ``ResNet`` and ``MobileNetV2`` build every conv through MMCV's
``build_conv_layer``), e.g. ``backbone=dict(type='mmdet.ResNet', ...,
conv_cfg=dict(type='mmrecprune.HypersphericalConv'))``."""
from mmrecprune.registry import MODELS
from mmrecprune.sparsity import HypersphericalConv2d

MODELS.register_module('HypersphericalConv', module=HypersphericalConv2d)
