# RecPrune stage 2 ("modified LTH"): L_cls + 10 * L_rec with the decoder frozen; 7 rounds of
# 1 epoch, 20 % global magnitude pruning per round, rewinding to the pretrained weights.
_base_ = [
    '../_base_/models/resnet18-w16_cls.py', '../_base_/datasets/fashion_mnist.py',
    '../_base_/schedules/lottery_sgd_constant.py', '../_base_/default_runtime.py'
]
rounds, epochs_per_round = 7, 1
model = dict(
    type='ReconstructionClassifier',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(out_indices=(0, 1, 2, 3)),
    stage='prune',
    rec_weight=10.0,
    decoder=dict(type='InverseResNetDecoder', in_channels=(16, 32, 64, 128),
                 hint_stages=(3, 4), hint_weight=0.1))
# the decoder-stage checkpoint holds the pretrained encoder and the trained decoder
load_from = 'work_dirs/recprune_r18-w16_decoder-stage_fashionmnist/epoch_3.pth'
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=rounds, epochs_per_round=epochs_per_round,
         example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2, rewind_to='pretrained',
                     method='recprune'))
]
train_cfg = dict(by_epoch=True, max_epochs=rounds * epochs_per_round,
                 val_interval=epochs_per_round)
# Each round fine-tunes on a fixed 20k-image subset of the training set (the paper uses the full
# set; at lr 3e-4 one pass moves the weights little either way) to fit 2 CPU cores.
train_dataloader = dict(dataset=dict(indices=20000))
