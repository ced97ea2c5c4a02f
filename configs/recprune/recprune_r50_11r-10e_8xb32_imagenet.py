# RecPrune stage 2 on ImageNet ResNet-50 with the paper's hyperparameters: lambda = 10,
# rounds of 10 epochs (SGD, constant lr 3e-4, momentum 0.9), 20 % per round, rewind to the
# pretrained weights. Tickets of rounds 7..11 are 79.0 / 83.2 / 86.6 / 89.3 / 91.4 % sparse.
_base_ = [
    '../_base_/models/resnet50_cls.py', '../_base_/datasets/imagenet_bs64.py',
    '../_base_/schedules/lottery_sgd_constant.py', '../_base_/default_runtime.py'
]
rounds, epochs_per_round = 11, 10
model = dict(
    type='ReconstructionClassifier',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(out_indices=(0, 1, 2, 3)),
    stage='prune',
    rec_weight=10.0,
    decoder=dict(type='InverseResNetDecoder', in_channels=(256, 512, 1024, 2048),
                 hint_stages=(3, 4), hint_weight=0.1))
load_from = 'work_dirs/recprune_r50_decoder-stage_8xb32_imagenet/epoch_10.pth'
train_dataloader = dict(batch_size=32)
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=rounds, epochs_per_round=epochs_per_round,
         example_input_shape=(1, 3, 224, 224),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2, rewind_to='pretrained',
                     method='recprune'))
]
train_cfg = dict(by_epoch=True, max_epochs=rounds * epochs_per_round,
                 val_interval=epochs_per_round)
auto_scale_lr = dict(base_batch_size=256)  # 8 GPUs x 32 images
