# In-task PSAP of a trained Mask R-CNN R50-FPN (mmdet's shipped 1x COCO config): -50 % backbone
# FLOPs (800x1344) in 4 protective, self-adaptive steps at the start of epochs 0-3, trained with
# the detection and mask losses throughout; the 1x schedule fine-tunes the rest.
# Only the starting weights, the optimizer wrapper and custom_hooks differ from the shipped file.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmrecprune'], allow_failed_imports=False)
# the trained detector to prune: mmdet's model-zoo Mask R-CNN (download it there, see
# README.md) or your own epoch_12.pth
load_from = 'checkpoints/mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth'
model = dict(backbone=dict(init_cfg=None))  # the weights come from load_from
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
custom_hooks = [
    dict(type='mmrecprune.StructuredPruningHook', by_epoch=True, begin=0, interval=1,
         example_input_shape=(1, 3, 800, 1344),
         pruner=dict(type='mmrecprune.PSAPPruner', target=dict(flops=0.5), num_steps=4,
                     round_to=8))
]
