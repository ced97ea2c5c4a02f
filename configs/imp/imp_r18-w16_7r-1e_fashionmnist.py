# The IMP baseline: the RecPrune loop without the decoder (lambda = 0).
_base_ = [
    '../_base_/models/resnet18-w16_cls.py', '../_base_/datasets/fashion_mnist.py',
    '../_base_/schedules/lottery_sgd_constant.py', '../_base_/default_runtime.py'
]
rounds, epochs_per_round = 7, 1
model = dict(data_preprocessor={{_base_.data_preprocessor}})
load_from = 'work_dirs/resnet18-w16_1xb128-6e_fashionmnist/epoch_6.pth'
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=rounds, epochs_per_round=epochs_per_round,
         example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2, rewind_to='pretrained',
                     method='imp'))
]
train_cfg = dict(by_epoch=True, max_epochs=rounds * epochs_per_round,
                 val_interval=epochs_per_round)
# Each round fine-tunes on a fixed 20k-image subset of the training set (the paper uses the full
# set; at lr 3e-4 one pass moves the weights little either way) to fit 2 CPU cores.
train_dataloader = dict(dataset=dict(indices=20000))
