# L1-uniform with slimming during training: each of the 3 steps (start of epochs 0, 1, 2) removes
# its cut channels from the model being trained (optimizer state, EMA models and the DDP wrapper
# follow), so epochs 1-3 train a model at 83 %, 67 % and 50 % of the backbone FLOPs. Same
# channels and ticket as l1-uniform_r18-w16_1xb128-4e_fashionmnist.py; checkpoints hold the slim
# model.
_base_ = './l1-uniform_r18-w16_1xb128-4e_fashionmnist.py'
custom_hooks = [
    dict(type='StructuredPruningHook', interval=1, begin=0, example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='L1UniformPruner', target=dict(flops=0.5), num_steps=3,
                     slim_during_training=True))
]
