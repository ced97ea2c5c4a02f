# Mask transfer: a labelled classifier trained on a ticket's mask, the mask fixed throughout.
#   model.backbone.weights: 'ticket' (its weights: the rewind point), 'random' (the backbone's
#     own initialisation, seeded) or a checkpoint path whose backbone.* weights start the run
#   model.backbone.masks:   'ticket' or 'random' (same per-layer sparsity, random positions:
#     the random-mask control), seeded by model.backbone.seed
# e.g. --cfg-options model.backbone.ticket=work_dirs/rotnet-imp_r18-w16_7r-2e_fashionmnist/tickets/round_7.pth
_base_ = ['../pretrain/resnet18-w16_1xb128-6e_fashionmnist.py']
ticket = 'work_dirs/rotnet-imp_r18-w16_7r-2e_fashionmnist/tickets/round_7.pth'
model = dict(backbone=dict(
    _delete_=True, type='mmrecprune.PrunedBackbone', ticket=ticket, out_indices=(3, ),
    weights='ticket', masks='ticket', seed=0))
train_dataloader = dict(dataset=dict(indices=20000))
