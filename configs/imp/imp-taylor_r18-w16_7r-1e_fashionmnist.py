# IMP ranked by first-order Taylor saliency |w * dL/dw| (averaged over the optimizer steps of each
# round) instead of |w|: the IMP baseline's loop, schedule and data, only the importance differs.
_base_ = ['./imp_r18-w16_7r-1e_fashionmnist.py']
rounds, epochs_per_round = 7, 1
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=rounds, epochs_per_round=epochs_per_round,
         example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2, rewind_to='pretrained',
                     method='imp', importance=dict(type='mmrecprune.Taylor')))
]
