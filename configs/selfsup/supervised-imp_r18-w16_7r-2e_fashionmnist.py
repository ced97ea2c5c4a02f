# The mask found WITH labels, for comparison with the RotNet / S4L masks: the same pruning loop
# (from scratch, 7 rounds of 2 epochs, 20 % per round over all convs, late resetting to the
# weights after one epoch) with the ordinary cross-entropy classifier.
_base_ = [
    '../_base_/models/resnet18-w16_cls.py', '../_base_/datasets/fashion_mnist.py',
    '../_base_/schedules/fashion_mnist_cls_6e.py', '../_base_/default_runtime.py'
]
rounds, epochs_per_round = 7, 2
model = dict(data_preprocessor={{_base_.data_preprocessor}})
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
]
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=rounds, epochs_per_round=epochs_per_round,
         reset_lr=True, example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2, rewind_to='iteration',
                     rewind_iter=79, include=('backbone.*', ), exclude=(),
                     method='supervised-imp'))
]
load_from = None
train_cfg = dict(by_epoch=True, max_epochs=rounds * epochs_per_round,
                 val_interval=epochs_per_round)
train_dataloader = dict(dataset=dict(pipeline={{_base_.test_pipeline}}, indices=10000))
default_hooks = dict(checkpoint=dict(interval=epochs_per_round))
