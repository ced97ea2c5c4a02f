# Pruning with self-supervision (Caron et al.), embedded default: iterative magnitude pruning in a
# RotNet training loop, no labels. From scratch, 7 rounds of 2 epochs on a fixed 10k-image
# subset; 20 % of the remaining weights per round, global over ALL convs (the stem too, as the
# paper; set pruner.exclude=('conv1.*', 'stem.*') to keep it); late resetting to the weights
# after one epoch (the paper's CIFAR setting), i.e. rewind_iter = 10000 / 128 = 79 iterations.
# pruner.rewind_to='reinit' keeps only the masks instead.
_base_ = ['./rotnet_r18-w16_1xb128-6e_fashionmnist.py']
rounds, epochs_per_round = 7, 2
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
]
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=rounds, epochs_per_round=epochs_per_round,
         reset_lr=True, example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2, rewind_to='iteration',
                     rewind_iter=79, include=('backbone.*', ), exclude=(),
                     method='rotnet-imp'))
]
load_from = None
train_cfg = dict(by_epoch=True, max_epochs=rounds * epochs_per_round,
                 val_interval=epochs_per_round)
train_dataloader = dict(dataset=dict(indices=10000))
default_hooks = dict(checkpoint=dict(interval=epochs_per_round, save_best=None))
