# One-shot 2:4 pruning with no fine-tuning: every group of 4 consecutive input channels keeps
# its 2 largest weights, pruned entries zero. Training with this config trains the dense model
# and cuts it at the end; to cut an existing checkpoint use
#   python tools/prune_on_the_fly.py \
#       configs/nm/nm-2to4_oneshot_r18-w16_1xb128-6e_fashionmnist.py CKPT
_base_ = ['../onthefly/oneshot_r18-w16_1xb128-6e_fashionmnist.py']
custom_hooks = [
    dict(type='mmrecprune.OnTheFlyPruningHook', example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='OneShotMagnitudePruner', sparsity=0.5, recovery='zero',
                     pattern='2:4'))
]
