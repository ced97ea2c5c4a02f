# On-the-fly pruning of MobileNetV2 (width 1.0) on ImageNet-1k, p = 70 % of every conv but the
# first (the paper's MobileNetV2 setting, compared after fine-tuning). The 90-epoch step
# schedule of the ResNets; mmpretrain's own MobileNetV2 recipe (300 epochs) works the same way.
_base_ = ['./onthefly_r50_8xb32-90e_imagenet.py']
sparsity = 0.7
model = dict(
    backbone=dict(_delete_=True, type='mmdet.MobileNetV2', widen_factor=1.0, out_indices=(7, ),
                  conv_cfg=dict(type='mmrecprune.HypersphericalConv'),
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False),
    in_channels=1280)
optim_wrapper = dict(optimizer=dict(weight_decay=4e-5))
custom_hooks = [
    dict(type='mmrecprune.OnTheFlyPruningHook', example_input_shape=(1, 3, 224, 224),
         pruner=dict(type='OnTheFlyPruner', sparsity=sparsity, penalty=10.0, margin=0.5,
                     warmup_iters=5005, update_interval=10, recovery='filter_abs_signed',
                     exclude=('conv1.*', )))
]
