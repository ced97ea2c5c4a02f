# mmdet's ResNet-18 at a quarter of the standard width (16-32-64-128 channels).
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmdet.ResNet', depth=18, base_channels=16, num_stages=4,
        out_indices=(3, ), norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
        style='pytorch'),
    in_channels=128,
    num_classes=10,
)
