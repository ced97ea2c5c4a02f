# On-the-fly pruning of ResNet-50 on ImageNet-1k (8 GPUs x 32 images): the standard 90-epoch
# recipe with hyperspherical convs and the gap penalty for p = 50 %, then one cut with no
# fine-tuning (ticket: work_dir/tickets/onthefly_p50.pth, folded: an ordinary mmdet.ResNet).
# Fine-tuning an existing dense ResNet-50 instead of training from scratch: set `load_from` to
# it (our pretraining, mmpretrain's resnet50_8xb32_in1k or torchvision's file; its conv weights
# load into the hyperspherical convs under the same names, only their directions are used) and
# shorten the schedule, e.g. --cfg-options train_cfg.max_epochs=20.
_base_ = [
    '../_base_/models/resnet50_cls.py', '../_base_/datasets/imagenet_bs64.py',
    '../_base_/schedules/imagenet_bs256_90e.py', '../_base_/default_runtime.py'
]
sparsity = 0.5
model = dict(data_preprocessor={{_base_.data_preprocessor}},
             backbone=dict(conv_cfg=dict(type='mmrecprune.HypersphericalConv')))
optim_wrapper = dict(type='mmrecprune.PruningOptimWrapper')
train_dataloader = dict(batch_size=32)
val_dataloader = dict(batch_size=32)
custom_hooks = [
    dict(type='mmrecprune.OnTheFlyPruningHook', example_input_shape=(1, 3, 224, 224),
         bn_recalibration_images=0,
         # the warm-up is one epoch (1.28M images / 256)
         pruner=dict(type='OnTheFlyPruner', sparsity=sparsity, penalty=10.0, margin=0.5,
                     warmup_iters=5005, update_interval=10, recovery='filter_abs_signed'))
]
default_hooks = dict(logger=dict(interval=100))
