# RetinaNet R50-FPN 1x on COCO with a pruned ResNet-50 ticket.
_base_ = './retinanet_r50_fpn_1x_coco.py'
ticket = 'work_dirs/recprune_r50_11r-10e_8xb32_imagenet/tickets/round_7.pth'
model = dict(backbone=dict(
    _delete_=True, type='mmrecprune.PrunedBackbone', ticket=ticket,
    out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True))
