# Dense pretraining of the quarter-width ResNet-18 on Fashion-MNIST (56x56).
_base_ = [
    '../_base_/models/resnet18-w16_cls.py', '../_base_/datasets/fashion_mnist.py',
    '../_base_/schedules/fashion_mnist_cls_6e.py', '../_base_/default_runtime.py'
]
model = dict(data_preprocessor={{_base_.data_preprocessor}})
