# Linear probe: the ticket's backbone frozen entirely (every stage, BN in eval mode, no
# gradients), only the linear head trains. Any classification dataset config works: replace the
# dataset _base_ and model.num_classes.
_base_ = [
    '../_base_/models/resnet18-w16_cls.py', '../_base_/datasets/fashion_mnist.py',
    '../_base_/default_runtime.py'
]
ticket = 'work_dirs/rotnet-imp_r18-w16_7r-2e_fashionmnist/tickets/round_7.pth'
model = dict(
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(_delete_=True, type='mmrecprune.PrunedBackbone', ticket=ticket,
                  out_indices=(3, ), frozen_stages=4, norm_eval=True))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=3, by_epoch=True, begin=0, end=3,
                        convert_to_iter_based=True)]
train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=3)
val_cfg = dict()
test_cfg = dict()
train_dataloader = dict(dataset=dict(indices=20000))
