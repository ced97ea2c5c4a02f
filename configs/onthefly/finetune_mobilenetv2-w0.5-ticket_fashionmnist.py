# Short fine-tune of a MobileNetV2-w0.5 ticket (on-the-fly or magnitude) on Fashion-MNIST with
# its mask kept (pruned entries stay at their fill values), 1 epoch at a tenth of the
# pretraining learning rate. Point it at a ticket:
#   --cfg-options model.backbone.ticket=work_dirs/onthefly_mobilenetv2-w0.5_1xb128-6e_fashionmnist/tickets/onthefly_p70.pth
_base_ = ['./mobilenetv2-w0.5_1xb128-6e_fashionmnist.py']
ticket = 'work_dirs/onthefly_mobilenetv2-w0.5_1xb128-6e_fashionmnist/tickets/onthefly_p70.pth'
model = dict(backbone=dict(_delete_=True, type='mmrecprune.PrunedBackbone', ticket=ticket,
                           out_indices=(7, )))
optim_wrapper = dict(optimizer=dict(lr=0.01))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=1, by_epoch=True, begin=0, end=1,
                        convert_to_iter_based=True)]
train_cfg = dict(max_epochs=1, val_interval=1)
