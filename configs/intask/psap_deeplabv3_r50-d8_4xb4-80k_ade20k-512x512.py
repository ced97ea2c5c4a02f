# In-task PSAP of a trained DeepLabV3 R50-D8 (mmseg's shipped 80k ADE20K config): -50 % backbone
# FLOPs (512x512, dilated) in 4 protective, self-adaptive steps every 2000 iterations from
# iteration 0, trained with the segmentation loss; the 80k schedule fine-tunes the rest.
# Only the starting weights, the optimizer wrapper and custom_hooks differ from the shipped file.
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['mmrecprune'], allow_failed_imports=False)
# the trained segmentor to prune: mmseg's model-zoo DeepLabV3 (download it there, see
# README.md) or your own iter_80000.pth
load_from = 'checkpoints/deeplabv3_r50-d8_512x512_80k_ade20k_20200614_185028-0bb3f844.pth'
model = dict(pretrained=None)  # the weights come from load_from
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
custom_hooks = [
    dict(type='mmrecprune.StructuredPruningHook', by_epoch=False, begin=0, interval=2000,
         example_input_shape=(1, 3, 512, 512),
         pruner=dict(type='mmrecprune.PSAPPruner', target=dict(flops=0.5), num_steps=4,
                     round_to=8))
]
auto_scale_lr = dict(enable=False, base_batch_size=16)  # 4 GPUs x 4 images
