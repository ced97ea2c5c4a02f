# DeepLabV3 (mmseg ASPPHead) on the scenes with the slim PSAP ticket, output stride 8.
# The ASPP rates of the 512x512 / OS8 recipe (12, 24, 36) are scaled to the 128x128 scenes
# (16x16 feature maps): (1, 3, 6, 9).
_base_ = './fcn_r18-w16-slim-d8_1k_fashionscenes.py'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(decode_head=dict(
    _delete_=True, type='ASPPHead', in_channels=128, in_index=3, channels=64,
    dilations=(1, 3, 6, 9), dropout_ratio=0.1, num_classes=11, norm_cfg=norm_cfg,
    align_corners=False,
    loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
