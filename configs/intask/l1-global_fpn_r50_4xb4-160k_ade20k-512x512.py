# In-task structured pruning of a trained Semantic FPN R50 (mmseg's shipped 160k ADE20K config):
# -50 % backbone FLOPs (512x512) in 4 L1-global steps every 2000 iterations from iteration 0,
# trained with the segmentation loss; the 160k schedule fine-tunes the rest.
# Only the starting weights, the optimizer wrapper and custom_hooks differ from the shipped file.
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmrecprune'], allow_failed_imports=False)
# the trained segmentor to prune: mmseg's model-zoo Semantic FPN (download it there, see
# README.md) or your own iter_160000.pth
load_from = 'checkpoints/fpn_r50_512x512_160k_ade20k_20200718_131734-5b5a6ab9.pth'
model = dict(pretrained=None)  # the weights come from load_from
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
custom_hooks = [
    dict(type='mmrecprune.StructuredPruningHook', by_epoch=False, begin=0, interval=2000,
         example_input_shape=(1, 3, 512, 512),
         pruner=dict(type='mmrecprune.L1GlobalPruner', target=dict(flops=0.5), num_steps=4,
                     round_to=8))
]
auto_scale_lr = dict(enable=False, base_batch_size=16)  # 4 GPUs x 4 images
