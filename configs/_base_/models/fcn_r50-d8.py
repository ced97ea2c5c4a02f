# FCN on a dilated ResNet-50 (output stride 8), full scale. mmdet's ResNet is used so that the
# classifier-pretrained (and pruned) backbone loads with no key surgery.
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(512, 512))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmdet.ResNet', depth=50, num_stages=4, out_indices=(0, 1, 2, 3),
        strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), norm_cfg=norm_cfg, norm_eval=False,
        style='pytorch'),
    decode_head=dict(
        type='FCNHead', in_channels=2048, in_index=3, channels=512, num_convs=2,
        concat_input=True, dropout_ratio=0.1, num_classes=150, norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
