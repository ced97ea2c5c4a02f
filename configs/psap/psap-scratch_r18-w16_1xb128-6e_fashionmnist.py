# PSAP from scratch (random init): the dense 6-epoch recipe, with 3 soft-pruning steps at the
# start of epochs 1, 2, 3 removing 50 % of the backbone FLOPs, then 3 epochs of training.
_base_ = [
    '../_base_/models/resnet18-w16_cls.py', '../_base_/datasets/fashion_mnist.py',
    '../_base_/schedules/fashion_mnist_cls_6e.py', '../_base_/default_runtime.py'
]
model = dict(data_preprocessor={{_base_.data_preprocessor}})
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
custom_hooks = [
    dict(type='StructuredPruningHook', interval=1, begin=1, example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='PSAPPruner', target=dict(flops=0.5), num_steps=3))
]
train_cfg = dict(val_interval=1)
