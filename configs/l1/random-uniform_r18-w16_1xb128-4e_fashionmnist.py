# Control: L1-uniform's widths (one ratio for every layer) with the channels chosen at random
# (a fixed random score per channel, seeded), on the same schedule, soft masks and fine-tuning.
# What L1 (or PSAP) gains over this is what its choice of channels is worth.
_base_ = './l1-uniform_r18-w16_1xb128-4e_fashionmnist.py'
custom_hooks = [
    dict(type='StructuredPruningHook', interval=1, begin=0, example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='L1UniformPruner', target=dict(flops=0.5), num_steps=3,
                     importance=dict(type='Random', seed=0)))
]
