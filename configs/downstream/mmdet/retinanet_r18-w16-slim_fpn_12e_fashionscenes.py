# RetinaNet on the scenes with the slim (structured) PSAP ticket. Another ticket:
#   --cfg-options model.backbone.ticket=work_dirs/.../tickets/slim.pth
# (a ticket pruned with prune_residual=True also needs model.neck.in_channels = its
# meta['out_channels']).
_base_ = './retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py'
model = dict(backbone=dict(ticket='work_dirs/psap_r18-w16_1xb128-4e_fashionmnist/tickets/slim.pth'))
