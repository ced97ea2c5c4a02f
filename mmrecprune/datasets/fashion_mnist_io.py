"""Reading the Fashion-MNIST IDX files that Debian's ``dataset-fashion-mnist`` installs."""
import gzip
import os
import os.path as osp

import numpy as np

DEFAULT_FASHION_MNIST_ROOT = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                         'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
_PREFIX = {'train': 'train', 'test': 't10k'}
_INSTALL_HINT = ('Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), '
                 'or point `data_root` / $FASHION_MNIST_ROOT to a folder holding the '
                 'four IDX files (optionally .gz).')


def fashion_mnist_root(root=None):
    return root or os.environ.get('FASHION_MNIST_ROOT', DEFAULT_FASHION_MNIST_ROOT)


def _idx_path(root, name):
    for candidate in (osp.join(root, name), osp.join(root, name + '.gz')):
        if osp.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f'Fashion-MNIST file {name}[.gz] not found in {root!r}. {_INSTALL_HINT}')


def read_idx(path):
    """Read one IDX file (plain or gzip) into a numpy array."""
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f'{path} is not an unsigned-byte IDX file')
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        raise ValueError(f'{path} is truncated: header promises {expected} bytes, '
                         f'found {len(data) - offset}')
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def load_fashion_mnist(root=None, split='train'):
    """Return ``(images uint8 [N, 28, 28], labels int64 [N])`` for ``split``."""
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = fashion_mnist_root(root)
    prefix = _PREFIX[split]
    images = read_idx(_idx_path(root, f'{prefix}-images-idx3-ubyte'))
    labels = read_idx(_idx_path(root, f'{prefix}-labels-idx1-ubyte')).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f'{root}: {len(images)} images but {len(labels)} labels')
    return images, labels
