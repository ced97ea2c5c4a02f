# RetinaNet on the scenes, backbone initialised from the dense Fashion-MNIST classifier.
# Another checkpoint: --cfg-options model.backbone.init_cfg.checkpoint=PATH
_base_ = [
    '../../_base_/models/retinanet_r18-w16_fpn.py',
    '../../_base_/datasets/fashion_scenes_detection.py',
    '../../_base_/schedules/scenes_det_12e.py', '../../_base_/det_runtime.py'
]
pretrained = 'work_dirs/resnet18-w16_1xb128-6e_fashionmnist/epoch_6.pth'
model = dict(backbone=dict(
    init_cfg=dict(type='mmrecprune.StrictPretrained', prefix='backbone.', checkpoint=pretrained)))
