# FCN R50-D8 on ADE20K with a pruned ResNet-50 ticket.
_base_ = './fcn_r50-d8_4xb4-80k_ade20k-512x512.py'
ticket = 'work_dirs/recprune_r50_11r-10e_8xb32_imagenet/tickets/round_7.pth'
model = dict(backbone=dict(
    _delete_=True, type='mmrecprune.PrunedBackbone', ticket=ticket,
    out_indices=(0, 1, 2, 3), strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), norm_eval=False))
