# FCN on the scenes with a pruned backbone from a ticket, dilated to output stride 8.
#   --cfg-options model.backbone.ticket=work_dirs/.../tickets/round_7.pth
_base_ = './fcn_r18-w16-d8_1k_fashionscenes.py'
ticket = 'work_dirs/recprune_r18-w16_7r-1e_fashionmnist/tickets/round_7.pth'
model = dict(backbone=dict(
    _delete_=True, type='mmrecprune.PrunedBackbone', ticket=ticket,
    out_indices=(0, 1, 2, 3), strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), norm_eval=False))
