# PSAP on the quarter-width ResNet-18, from the dense Fashion-MNIST checkpoint: remove 50 % of the
# backbone FLOPs (56x56 input) in 3 soft-pruning steps at the start of epochs 0, 1, 2, fine-tune
# to the end of epoch 4 on a fixed 20k-image subset, then export work_dir/tickets/slim.pth.
_base_ = [
    '../_base_/models/resnet18-w16_cls.py', '../_base_/datasets/fashion_mnist.py',
    '../_base_/default_runtime.py'
]
model = dict(data_preprocessor={{_base_.data_preprocessor}})
load_from = 'work_dirs/resnet18-w16_1xb128-6e_fashionmnist/epoch_6.pth'
optim_wrapper = dict(
    type='mmrecprune.PruningOptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=4, by_epoch=True, begin=0, end=4,
         convert_to_iter_based=True)
]
custom_hooks = [
    dict(type='StructuredPruningHook', interval=1, begin=0, example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='PSAPPruner', target=dict(flops=0.5), num_steps=3))
]
train_cfg = dict(by_epoch=True, max_epochs=4, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# a fixed 20k-image subset of the training set keeps a run to a few minutes on 2 CPU cores
train_dataloader = dict(dataset=dict(indices=20000))
