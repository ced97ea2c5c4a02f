# FCN on the scenes with the slim (structured) PSAP ticket, dilated to output stride 8.
#   --cfg-options model.backbone.ticket=work_dirs/.../tickets/slim.pth
_base_ = './fcn_r18-w16-ticket-d8_1k_fashionscenes.py'
model = dict(backbone=dict(ticket='work_dirs/psap_r18-w16_1xb128-4e_fashionmnist/tickets/slim.pth'))
