# Dense pretraining of mmdet's MobileNetV2 at half width on Fashion-MNIST (56x56), the recipe of
# the ResNet-18-w16 pretraining (6 epochs, SGD + cosine). The last conv keeps 1280 channels
# (mmdet widens it only for widen_factor > 1).
_base_ = ['../pretrain/resnet18-w16_1xb128-6e_fashionmnist.py']
model = dict(
    backbone=dict(_delete_=True, type='mmdet.MobileNetV2', widen_factor=0.5, out_indices=(7, ),
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False),
    in_channels=1280)
