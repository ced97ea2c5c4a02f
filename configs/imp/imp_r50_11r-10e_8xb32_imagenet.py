# The IMP baseline on ImageNet ResNet-50 (the RecPrune loop without the decoder).
_base_ = [
    '../_base_/models/resnet50_cls.py', '../_base_/datasets/imagenet_bs64.py',
    '../_base_/schedules/lottery_sgd_constant.py', '../_base_/default_runtime.py'
]
rounds, epochs_per_round = 11, 10
model = dict(data_preprocessor={{_base_.data_preprocessor}})
# Starting weights: a dense ImageNet ResNet-50 you have. Any of these works as `load_from`, with
# no key editing (the pruning hook maps and checks them; a file of another architecture stops
# the run with the keys that do not fit):
#   - our own pretraining: configs/pretrain/resnet50_8xb32-90e_imagenet.py -> epoch_90.pth
#   - mmpretrain's resnet50_8xb32_in1k checkpoint (keys backbone.*, head.fc.*)
#   - torchvision's ResNet-50 weights file (conv1.weight, layer1.0..., fc.*)
# e.g. --cfg-options load_from=/path/to/resnet50_8xb32_in1k_20210831-ea4938fc.pth; check a file
# first with tools/model_converters/starting_weights.py SRC DST --config THIS_CONFIG
load_from = 'work_dirs/resnet50_8xb32-90e_imagenet/epoch_90.pth'
train_dataloader = dict(batch_size=32)
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=rounds, epochs_per_round=epochs_per_round,
         example_input_shape=(1, 3, 224, 224),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2, rewind_to='pretrained',
                     method='imp'))
]
train_cfg = dict(by_epoch=True, max_epochs=rounds * epochs_per_round,
                 val_interval=epochs_per_round)
auto_scale_lr = dict(base_batch_size=256)  # 8 GPUs x 32 images
