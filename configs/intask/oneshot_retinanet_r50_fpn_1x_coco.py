# In-task one-shot magnitude pruning of a trained RetinaNet R50-FPN (mmdet's shipped 1x COCO
# config): after one epoch with the detection loss, 50 % of the backbone conv weights (global
# magnitude, stem excluded) are pruned in one cut; the remaining 11 epochs of the 1x schedule
# fine-tune with the mask fixed.
# Only the starting weights, the optimizer wrapper and custom_hooks differ from the shipped file.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmrecprune'], allow_failed_imports=False)
# the trained detector to prune: mmdet's model-zoo RetinaNet (download it there, see README.md)
# or your own epoch_12.pth
load_from = 'checkpoints/retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth'
model = dict(backbone=dict(init_cfg=None))  # the weights come from load_from
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
custom_hooks = [
    dict(type='mmrecprune.LotteryTicketHook', rounds=1, epochs_per_round=1, finetune_epochs=11,
         example_input_shape=(1, 3, 800, 1344),
         pruner=dict(type='mmrecprune.IterativeMagnitudePruner', prune_ratio=0.5,
                     rewind_to='none', ranking='global', method='oneshot'))
]
