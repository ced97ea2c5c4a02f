# RecPrune stage 1 on ImageNet ResNet-50: decoder on the frozen pretrained encoder.
_base_ = [
    '../_base_/models/resnet50_cls.py', '../_base_/datasets/imagenet_bs64.py',
    '../_base_/default_runtime.py'
]
model = dict(
    type='ReconstructionClassifier',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(out_indices=(0, 1, 2, 3)),
    stage='decoder',
    decoder=dict(type='InverseResNetDecoder', in_channels=(256, 512, 1024, 2048),
                 hint_stages=(3, 4), hint_weight=0.1))
# Starting weights: a dense ImageNet ResNet-50 you have. Any of these works as `load_from`, with
# no key editing (the pruning hook maps and checks them; a file of another architecture stops
# the run with the keys that do not fit):
#   - our own pretraining: configs/pretrain/resnet50_8xb32-90e_imagenet.py -> epoch_90.pth
#   - mmpretrain's resnet50_8xb32_in1k checkpoint (keys backbone.*, head.fc.*)
#   - torchvision's ResNet-50 weights file (conv1.weight, layer1.0..., fc.*)
# e.g. --cfg-options load_from=/path/to/resnet50_8xb32_in1k_20210831-ea4938fc.pth; check a file
# first with tools/model_converters/starting_weights.py SRC DST --config THIS_CONFIG
load_from = 'work_dirs/resnet50_8xb32-90e_imagenet/epoch_90.pth'
train_dataloader = dict(batch_size=32)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=10, by_epoch=True, begin=0, end=10)]
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=10)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=256)  # 8 GPUs x 32 images
