# 2:4 tickets by iterative magnitude pruning under the N:M constraint: 4 rounds of the IMP loop
# removing 20 % of the surviving weights per round, the 2 largest of every group of 4 input
# channels protected, so the rounds reach 20, 36, 48.8 and then exactly 50 % (2:4).
# Rounds 1-3 export unstructured tickets, round 4 the 'nm' ticket
# (work_dir/tickets/round_4.pth).
_base_ = ['../imp/imp_r18-w16_7r-1e_fashionmnist.py']
rounds, epochs_per_round = 4, 1
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=rounds, epochs_per_round=epochs_per_round,
         example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2, rewind_to='pretrained',
                     pattern='2:4', method='imp'))
]
train_cfg = dict(by_epoch=True, max_epochs=rounds * epochs_per_round,
                 val_interval=epochs_per_round)
