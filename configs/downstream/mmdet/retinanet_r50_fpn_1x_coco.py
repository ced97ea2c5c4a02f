# RetinaNet R50-FPN 1x on COCO, backbone from the ImageNet classifier trained by this plugin.
_base_ = [
    '../../_base_/models/retinanet_r50_fpn.py', '../../_base_/datasets/coco_detection.py',
    '../../_base_/schedules/schedule_1x.py', '../../_base_/det_runtime.py'
]
pretrained = 'work_dirs/resnet50_8xb32-90e_imagenet/epoch_90.pth'
model = dict(backbone=dict(
    init_cfg=dict(type='mmrecprune.StrictPretrained', prefix='backbone.', checkpoint=pretrained)))
optim_wrapper = dict(optimizer=dict(lr=0.01))
