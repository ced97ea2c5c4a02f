# RecPrune stage 1: train the inverse-ResNet decoder on the frozen dense encoder.
_base_ = [
    '../_base_/models/resnet18-w16_cls.py', '../_base_/datasets/fashion_mnist.py',
    '../_base_/default_runtime.py'
]
model = dict(
    type='ReconstructionClassifier',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(out_indices=(0, 1, 2, 3)),
    stage='decoder',
    decoder=dict(type='InverseResNetDecoder', in_channels=(16, 32, 64, 128),
                 hint_stages=(3, 4), hint_weight=0.1))
load_from = 'work_dirs/resnet18-w16_1xb128-6e_fashionmnist/epoch_6.pth'
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-3))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=3, by_epoch=True, begin=0, end=3,
                        convert_to_iter_based=True)]
train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=3)
train_dataloader = dict(dataset=dict(indices=20000))  # 3 passes over 20k images
val_cfg = dict()
test_cfg = dict()
