# The fine-tuned comparison of on-the-fly pruning on MobileNetV2-w0.5: iterative magnitude
# pruning from the dense checkpoint, 6 rounds of 1 epoch removing 18.2 % of the surviving
# weights each (1 - 0.818^6 = 70 %), global ranking, every conv but the first, rewound to the
# dense weights; its round_6 ticket then gets the same short fine-tune as the others
# (finetune_mobilenetv2-w0.5-ticket_fashionmnist.py).
_base_ = ['./mobilenetv2-w0.5_1xb128-6e_fashionmnist.py']
rounds, epochs_per_round = 6, 1
load_from = 'work_dirs/mobilenetv2-w0.5_1xb128-6e_fashionmnist/epoch_6.pth'
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=rounds, epochs_per_round=epochs_per_round,
         example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.182, rewind_to='pretrained',
                     exclude=('conv1.*', ), method='imp'))
]
train_cfg = dict(by_epoch=True, max_epochs=rounds * epochs_per_round,
                 val_interval=epochs_per_round)
# the pretraining lr at a tenth, constant (the fine-tune's rate), masked updates
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper', optimizer=dict(lr=0.01))
param_scheduler = []
