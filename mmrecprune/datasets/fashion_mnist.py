"""Fashion-MNIST classification dataset for MMEngine runners."""
import numpy as np
from mmengine.dataset import BaseDataset

from mmrecprune.registry import DATASETS
from .fashion_mnist_io import FASHION_MNIST_CLASSES, fashion_mnist_root, load_fashion_mnist


@DATASETS.register_module()
class FashionMNIST(BaseDataset):
    """Fashion-MNIST read from its IDX files (Debian's ``dataset-fashion-mnist``).

    Images are kept in one uint8 array and expanded to 3-channel HxWx3 arrays only when a
    sample is fetched, so the 60k-image train split costs ~47 MB of memory.

    Args:
        data_root (str, optional): folder with the four IDX files (plain or ``.gz``).
            Defaults to ``$FASHION_MNIST_ROOT`` or ``/usr/share/datasets/fashion-mnist``.
        split (str): ``'train'`` (60k images) or ``'test'`` (10k). Defaults to ``'train'``.
        **kwargs: passed to :class:`mmengine.dataset.BaseDataset` (``pipeline``,
            ``indices`` for a subset, ``test_mode``, ...).
    """
    METAINFO = dict(classes=FASHION_MNIST_CLASSES)

    def __init__(self, data_root=None, split='train', **kwargs):
        self.split = split
        kwargs.setdefault('serialize_data', False)
        super().__init__(data_root=fashion_mnist_root(data_root), **kwargs)

    def load_data_list(self):
        self._images, labels = load_fashion_mnist(self.data_root, self.split)
        return [dict(image_index=i, gt_label=int(label)) for i, label in enumerate(labels)]

    def get_data_info(self, idx):
        info = super().get_data_info(idx)
        grey = self._images[info['image_index']]
        info['img'] = np.repeat(grey[..., None], 3, axis=2)
        info['img_shape'] = info['ori_shape'] = grey.shape
        return info

    def get_gt_labels(self):
        return np.array([d['gt_label'] for d in self.data_list])
