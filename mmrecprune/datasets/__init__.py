import mmcv.transforms  # noqa: F401  registers the 'mmcv.' transforms the configs use

from .fashion_mnist import FashionMNIST
from .fashion_mnist_io import FASHION_MNIST_CLASSES, load_fashion_mnist
from .imagenet import ImageNet
from .scenes import generate_scenes
from .transforms import PackClsInputs, RandomResizedCrop, ResizeEdge

__all__ = ['FashionMNIST', 'FASHION_MNIST_CLASSES', 'load_fashion_mnist', 'ImageNet',
           "PackClsInputs", "RandomResizedCrop", "ResizeEdge", "generate_scenes"]
