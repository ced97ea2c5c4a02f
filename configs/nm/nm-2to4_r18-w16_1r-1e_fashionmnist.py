# 2:4 tickets of the quarter-width ResNet-18 on Fashion-MNIST: one round of the IMP loop
# (fine-tune 1 epoch, then keep the 2 largest of every 4 consecutive input channels of each
# filter at each kernel tap, rewind the survivors to the dense weights). prune_ratio 0.5 >=
# 1 - 2/4 reaches the pattern in this one round: a 50 % sparse ticket of kind 'nm' in
# work_dir/tickets/round_1.pth. Its like-for-like baseline is the same round with unstructured
# global magnitude pruning of 50 % (the leaderboard's `magnitude` at 50 %).
_base_ = ['../imp/imp_r18-w16_7r-1e_fashionmnist.py']
rounds, epochs_per_round = 1, 1
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=rounds, epochs_per_round=epochs_per_round,
         example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.5, rewind_to='pretrained',
                     pattern='2:4', method='imp'))
]
train_cfg = dict(by_epoch=True, max_epochs=rounds * epochs_per_round,
                 val_interval=epochs_per_round)
