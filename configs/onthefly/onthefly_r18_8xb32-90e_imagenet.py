# On-the-fly pruning of ResNet-18 on ImageNet-1k, p = 50 % (the paper's headline: top-1 drop of
# 0.47 points with no retraining). Same recipe as the ResNet-50 config.
_base_ = ['./onthefly_r50_8xb32-90e_imagenet.py']
model = dict(backbone=dict(depth=18), in_channels=512)
