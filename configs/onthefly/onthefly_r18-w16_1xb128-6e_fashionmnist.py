# On-the-fly pruning of the quarter-width ResNet-18 on Fashion-MNIST (embedded default): the
# dense pretraining recipe (6 epochs, SGD + cosine) with hyperspherical convs and the gap
# penalty for p = 50 %, then one cut at the end with no fine-tuning, mean-value recovery, and a
# ticket in work_dir/tickets/onthefly_p50.pth. Compare with one-shot magnitude pruning of the
# ordinary dense checkpoint (oneshot_r18-w16_1xb128-6e_fashionmnist.py) and see README.md.
_base_ = ['../pretrain/resnet18-w16_1xb128-6e_fashionmnist.py']
sparsity = 0.5
model = dict(backbone=dict(conv_cfg=dict(type='mmrecprune.HypersphericalConv')))
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
custom_hooks = [
    dict(type='mmrecprune.OnTheFlyPruningHook', example_input_shape=(1, 3, 56, 56),
         bn_recalibration_images=0,
         # penalty, margin and warm-up: README "Choices" (the warm-up is one epoch of the 60k
         # training images at batch 128). compiled_ops=True computes the normalisation and the
         # penalty with C++ kernels built on first use (g++ and ninja; README "Compiled kernels")
         pruner=dict(type='OnTheFlyPruner', sparsity=sparsity, penalty=10.0, margin=0.5,
                     warmup_iters=469, update_interval=10, recovery='filter_abs_signed',
                     compiled_ops=False))
]
