# 2:4 ResNet-50 tickets on ImageNet-1k: the IMP loop of imp_r50_11r-10e_8xb32_imagenet.py under
# the 2:4 constraint, 4 rounds of 10 epochs (20, 36, 48.8, then exactly 50 %). The round-4 ticket
# is of kind 'nm'; in a detector config, PrunedBackbone(semi_structured=True) runs its 1x1 convs
# as semi-structured sparse products on Ampere-or-newer GPUs (see README.md).
_base_ = ['../imp/imp_r50_11r-10e_8xb32_imagenet.py']
rounds, epochs_per_round = 4, 10
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=rounds, epochs_per_round=epochs_per_round,
         example_input_shape=(1, 3, 224, 224),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2, rewind_to='pretrained',
                     pattern='2:4', method='imp'))
]
train_cfg = dict(by_epoch=True, max_epochs=rounds * epochs_per_round,
                 val_interval=epochs_per_round)
