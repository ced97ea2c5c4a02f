# Semantic FPN on the quarter-width ResNet-18 (embedded default, output stride 4).
# The scene items are 24-64 px, so an output-stride-8 head (FCN-D8) spends its first thousand
# iterations on item boundaries and never separates the classes; the FPN head's 1/4-resolution
# output learns them within the same budget (see README "Dense references").
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor', mean=[72.94, 72.94, 72.94], std=[90.02, 90.02, 90.02],
    bgr_to_rgb=False, pad_val=0, seg_pad_val=255, size=(128, 128))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmdet.ResNet', depth=18, base_channels=16, num_stages=4, out_indices=(0, 1, 2, 3),
        norm_cfg=norm_cfg, norm_eval=False, style='pytorch'),
    neck=dict(type='FPN', in_channels=[16, 32, 64, 128], out_channels=64, num_outs=4),
    decode_head=dict(
        type='FPNHead', in_channels=[64, 64, 64, 64], in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32], channels=64, dropout_ratio=0.1, num_classes=11,
        norm_cfg=norm_cfg, align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
