# FCN on the quarter-width ResNet-18, dilated to output stride 8 (embedded default).
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor', mean=[72.94, 72.94, 72.94], std=[90.02, 90.02, 90.02],
    bgr_to_rgb=False, pad_val=0, seg_pad_val=255, size=(128, 128))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmdet.ResNet', depth=18, base_channels=16, num_stages=4, out_indices=(0, 1, 2, 3),
        strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), norm_cfg=norm_cfg, norm_eval=False,
        style='pytorch'),
    decode_head=dict(
        type='FCNHead', in_channels=128, in_index=3, channels=64, num_convs=2,
        concat_input=True, dropout_ratio=0.1, num_classes=11, norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
