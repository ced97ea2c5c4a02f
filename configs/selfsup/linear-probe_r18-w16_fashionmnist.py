# Linear probe of the dense backbone (the reference of the ticket probe,
# linear-probe_r18-w16-ticket_fashionmnist.py): every stage frozen, BN in eval mode, only the
# linear head trains. Another checkpoint: --cfg-options model.backbone.init_cfg.checkpoint=PATH
_base_ = ['./linear-probe_r18-w16-ticket_fashionmnist.py']
pretrained = 'work_dirs/resnet18-w16_1xb128-6e_fashionmnist/epoch_6.pth'
model = dict(backbone=dict(
    _delete_=True, type='mmdet.ResNet', depth=18, base_channels=16, num_stages=4,
    out_indices=(3, ), frozen_stages=4, norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=True, style='pytorch',
    init_cfg=dict(type='mmrecprune.StrictPretrained', prefix='backbone.', checkpoint=pretrained)))
