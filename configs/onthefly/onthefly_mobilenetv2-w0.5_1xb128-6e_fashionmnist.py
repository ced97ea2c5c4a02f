# On-the-fly pruning of MobileNetV2-w0.5 on Fashion-MNIST: hyperspherical convs and the gap
# penalty for p = 70 % of every conv but the first (`conv1`, excluded as in the paper), one cut
# at the end with no fine-tuning, ticket in work_dir/tickets/onthefly_p70.pth.
_base_ = ['./mobilenetv2-w0.5_1xb128-6e_fashionmnist.py']
sparsity = 0.7
model = dict(backbone=dict(conv_cfg=dict(type='mmrecprune.HypersphericalConv')))
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
custom_hooks = [
    dict(type='mmrecprune.OnTheFlyPruningHook', example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='OnTheFlyPruner', sparsity=sparsity, penalty=10.0, margin=0.5,
                     warmup_iters=469, update_interval=10, recovery='filter_abs_signed',
                     exclude=('conv1.*', )))
]
