# The baseline of on-the-fly pruning: one-shot magnitude pruning (p of every layer) of an
# ordinarily trained dense ResNet-18-w16, no fine-tuning. Training a dense model with this config
# prunes it at the end; to prune an existing checkpoint use
#   python tools/prune_on_the_fly.py configs/onthefly/oneshot_r18-w16_1xb128-6e_fashionmnist.py CKPT
_base_ = ['../pretrain/resnet18-w16_1xb128-6e_fashionmnist.py']
sparsity = 0.5
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
custom_hooks = [
    dict(type='mmrecprune.OnTheFlyPruningHook', example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='OneShotMagnitudePruner', sparsity=sparsity, recovery='zero'))
]
