# Semantic FPN on the scenes, backbone initialised from the dense Fashion-MNIST classifier.
# The embedded default's segmentation reference. Another checkpoint:
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
_base_ = [
    '../../_base_/models/fpn_r18-w16.py',
    '../../_base_/datasets/fashion_scenes_segmentation.py',
    '../../_base_/schedules/scenes_seg_1k.py', '../../_base_/seg_runtime.py'
]
pretrained = 'work_dirs/resnet18-w16_1xb128-6e_fashionmnist/epoch_6.pth'
model = dict(backbone=dict(
    init_cfg=dict(type='mmrecprune.StrictPretrained', prefix='backbone.', checkpoint=pretrained)))
