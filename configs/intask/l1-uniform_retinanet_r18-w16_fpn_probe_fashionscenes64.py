# In-task L1-uniform pruning of a trained RetinaNet (the benchmark probe on the 64x64 scenes):
# -50 % backbone FLOPs (64x64 input) in 3 steps at the start of epochs 0, 1, 2, trained with the
# detection loss for the probe's own 12 epochs (route (b) of tools/benchmarks/bench_routes.py).
# Only the starting weights, the optimizer wrapper and custom_hooks differ from the probe.
#   python tools/train.py configs/intask/l1-uniform_retinanet_r18-w16_fpn_probe_fashionscenes64.py \
#       --cfg-options load_from=work_dirs/.../det/epoch_12.pth
_base_ = '../downstream/mmdet/retinanet_r18-w16_fpn_probe_fashionscenes64.py'
custom_imports = dict(imports=['mmrecprune'], allow_failed_imports=False)
# the trained dense probe detector to prune (bench_routes.py gives each seed's own)
load_from = 'work_dirs/retinanet_r18-w16_fpn_probe_fashionscenes64/epoch_12.pth'
model = dict(backbone=dict(init_cfg=None))  # the weights come from load_from
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
custom_hooks = [
    dict(type='mmrecprune.StructuredPruningHook', by_epoch=True, begin=0, interval=1,
         example_input_shape=(1, 3, 64, 64),
         pruner=dict(type='mmrecprune.L1UniformPruner', target=dict(flops=0.5), num_steps=3))
]
