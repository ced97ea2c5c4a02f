# Pruning with self-supervision on ImageNet, the paper's RotNet hyperparameters: ResNet-50, 90
# epochs per round, batch 1536 (8 GPUs x 192), SGD lr 1.0 with 5 warm-up epochs, weight decay
# 1e-5, lr x0.1 at epochs 50 / 65 / 80; 20 % of the remaining weights per round over all convs;
# late resetting to about 3 epochs (~2500 updates at batch 1536). No labels are read.
_base_ = [
    '../_base_/datasets/imagenet_bs64.py', '../_base_/default_runtime.py'
]
rounds, epochs_per_round = 11, 90
model = dict(
    type='RotNetClassifier',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(type='mmdet.ResNet', depth=50, out_indices=(3, ),
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False),
    in_channels=2048)
train_dataloader = dict(batch_size=192)
optim_wrapper = dict(
    type='mmrecprune.PruningOptimWrapper',
    optimizer=dict(type='SGD', lr=1.0, momentum=0.9, weight_decay=1e-5))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='MultiStepLR', by_epoch=True, milestones=[50, 65, 80], gamma=0.1),
]
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=rounds, epochs_per_round=epochs_per_round,
         reset_lr=True, example_input_shape=(1, 3, 224, 224),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2, rewind_to='iteration',
                     rewind_iter=2500, include=('backbone.*', ), exclude=(),
                     method='rotnet-imp'))
]
train_cfg = dict(by_epoch=True, max_epochs=rounds * epochs_per_round,
                 val_interval=epochs_per_round)
val_cfg = dict()
test_cfg = dict()
val_evaluator = dict(_delete_=True, type='RotationAccuracy')
test_evaluator = val_evaluator
auto_scale_lr = dict(base_batch_size=1536)
