# Benchmark probe (64x64 scenes) with a pruned backbone from a ticket.
#   --cfg-options model.backbone.ticket=work_dirs/.../tickets/round_7.pth
_base_ = './fpn_r18-w16_probe_fashionscenes64.py'
ticket = 'work_dirs/recprune_r18-w16_7r-1e_fashionmnist/tickets/round_7.pth'
model = dict(backbone=dict(
    _delete_=True, type='mmrecprune.PrunedBackbone', ticket=ticket, out_indices=(0, 1, 2, 3),
    norm_eval=False))
