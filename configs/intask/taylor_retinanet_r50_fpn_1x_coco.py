# In-task structured pruning of a trained RetinaNet R50-FPN (mmdet's shipped 1x COCO config),
# channels ranked by their first-order Taylor importance under the detection loss (|w * dL/dw|
# per filter, averaged over the optimizer steps since the previous step, normalised per group
# and ranked globally): -50 % backbone FLOPs (800x1344) in 4 steps at the start of epochs 1-4;
# the 1x schedule fine-tunes the rest.
# Only the starting weights, frozen_stages, the optimizer wrapper and custom_hooks differ from
# the shipped file.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmrecprune'], allow_failed_imports=False)
# the trained detector to prune: mmdet's model-zoo RetinaNet (download it there, see README.md)
# or your own epoch_12.pth
load_from = 'checkpoints/retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth'
# the weights come from load_from; Taylor scores need the gradient of every pruned filter, so
# the stem and stage 1 (frozen by mmdet's frozen_stages=1) train too
model = dict(backbone=dict(init_cfg=None, frozen_stages=-1))
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
custom_hooks = [
    dict(type='mmrecprune.StructuredPruningHook', by_epoch=True, begin=1, interval=1,
         example_input_shape=(1, 3, 800, 1344),
         pruner=dict(type='mmrecprune.L1GlobalPruner', target=dict(flops=0.5), num_steps=4,
                     round_to=8, importance=dict(type='Taylor')))
]
