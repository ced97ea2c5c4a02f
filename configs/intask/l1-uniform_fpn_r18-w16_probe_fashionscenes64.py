# In-task L1-uniform pruning of a trained Semantic FPN (the benchmark probe on the 64x64
# scenes): -50 % backbone FLOPs (64x64 input) in 3 steps at iterations 0, 100 and 200, trained
# with the segmentation loss for the probe's own 1000 iterations (route (b) of
# tools/benchmarks/bench_routes.py). The steps fall at the same fractions of the schedule as
# the RetinaNet config's (epochs 0, 1, 2 of 12 with 125 iterations each: 0, 8 and 17 %).
# Only the starting weights, the optimizer wrapper and custom_hooks differ from the probe.
#   python tools/train.py configs/intask/l1-uniform_fpn_r18-w16_probe_fashionscenes64.py \
#       --cfg-options load_from=work_dirs/.../seg/iter_1000.pth
_base_ = '../downstream/mmseg/fpn_r18-w16_probe_fashionscenes64.py'
custom_imports = dict(imports=['mmrecprune'], allow_failed_imports=False)
# the trained dense probe segmentor to prune (bench_routes.py gives each seed's own)
load_from = 'work_dirs/fpn_r18-w16_probe_fashionscenes64/iter_1000.pth'
model = dict(backbone=dict(init_cfg=None))  # the weights come from load_from
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
custom_hooks = [
    dict(type='mmrecprune.StructuredPruningHook', by_epoch=False, begin=0, interval=100,
         example_input_shape=(1, 3, 64, 64),
         pruner=dict(type='mmrecprune.L1UniformPruner', target=dict(flops=0.5), num_steps=3))
]
