# PSAP on ImageNet ResNet-50 from the dense 90-epoch checkpoint: remove 50 % of the backbone
# FLOPs (224x224) in 5 steps, every 2 epochs from epoch 0, kept widths multiples of 8, then
# fine-tune to epoch 30 (8 GPUs x 32 images, cosine lr from 0.01).
_base_ = [
    '../_base_/models/resnet50_cls.py', '../_base_/datasets/imagenet_bs64.py',
    '../_base_/default_runtime.py'
]
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
val_dataloader = dict(batch_size=32)
optim_wrapper = dict(
    type='mmrecprune.PruningOptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=30, by_epoch=True, begin=0, end=30,
         convert_to_iter_based=True)
]
custom_hooks = [
    dict(type='StructuredPruningHook', interval=2, begin=0, example_input_shape=(1, 3, 224, 224),
         pruner=dict(type='PSAPPruner', target=dict(flops=0.5), num_steps=5, round_to=8))
]
train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=2)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=256)
default_hooks = dict(logger=dict(interval=100))
