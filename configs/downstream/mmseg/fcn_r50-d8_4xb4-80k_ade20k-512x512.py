# FCN R50-D8 on ADE20K, backbone from the ImageNet classifier trained by this plugin.
_base_ = [
    '../../_base_/models/fcn_r50-d8.py', '../../_base_/datasets/ade20k.py',
    '../../_base_/schedules/schedule_80k.py', '../../_base_/seg_runtime.py'
]
pretrained = 'work_dirs/resnet50_8xb32-90e_imagenet/epoch_90.pth'
model = dict(backbone=dict(
    init_cfg=dict(type='mmrecprune.StrictPretrained', prefix='backbone.', checkpoint=pretrained)))
