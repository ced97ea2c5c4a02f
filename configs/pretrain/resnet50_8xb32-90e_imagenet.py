# Dense ResNet-50 on ImageNet-1k (the full-scale counterpart; 8 GPUs x 32 images).
_base_ = [
    '../_base_/models/resnet50_cls.py', '../_base_/datasets/imagenet_bs64.py',
    '../_base_/schedules/imagenet_bs256_90e.py', '../_base_/default_runtime.py'
]
model = dict(data_preprocessor={{_base_.data_preprocessor}})
train_dataloader = dict(batch_size=32)
val_dataloader = dict(batch_size=32)
default_hooks = dict(logger=dict(interval=100))
