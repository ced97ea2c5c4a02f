# mmdet's standard ResNet-50 classifier (ImageNet).
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmdet.ResNet', depth=50, num_stages=4, out_indices=(3, ),
        norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch'),
    in_channels=2048,
    num_classes=1000,
)
