# Dense RotNet on Fashion-MNIST without labels: every image at 0 / 90 / 180 / 270 degrees, a 4-way
# head predicts the rotation (rotations made on the fly inside the model). The label-free
# counterpart of configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py.
_base_ = [
    '../_base_/models/resnet18-w16_cls.py', '../_base_/datasets/fashion_mnist.py',
    '../_base_/schedules/fashion_mnist_cls_6e.py', '../_base_/default_runtime.py'
]
model = dict(_delete_=True, type='RotNetClassifier',
             data_preprocessor={{_base_.data_preprocessor}},
             backbone={{_base_.model.backbone}}, in_channels=128)
# a flip would make 90 and 270 degrees ambiguous for symmetric garments: no augmentation
train_dataloader = dict(dataset=dict(pipeline={{_base_.test_pipeline}}))
val_evaluator = dict(_delete_=True, type='RotationAccuracy')
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(save_best='rotation/top1', rule='greater'))
