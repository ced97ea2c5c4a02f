"""Reading the Fashion-MNIST IDX files that Debian's ``dataset-fashion-mnist`` installs."""
import gzip
import math
import os
import os.path as osp
import zlib

import numpy as np

DEFAULT_FASHION_MNIST_ROOT = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                         'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
_PREFIX = {'train': 'train', 'test': 't10k'}
_INSTALL_HINT = ('Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), '
                 'or point `data_root` / $FASHION_MNIST_ROOT to a folder holding the '
                 'four IDX files (optionally .gz).')
_REINSTALL_HINT = ('Re-install the real files with `apt-get install --reinstall '
                   'dataset-fashion-mnist` (Debian/Ubuntu), or point `data_root` / '
                   '$FASHION_MNIST_ROOT at a folder holding the real Fashion-MNIST IDX files.')
# The header is checked before any data is read, so a crafted file (e.g. a small .gz that
# inflates to GBs) is refused up front. Fashion-MNIST / MNIST-format splits hold at most 60000
# items; 100000 leaves room for similar 28x28 sets while capping a read at ~78 MB.
IDX_MAX_ITEMS = 100_000
IMAGE_SHAPE = (28, 28)
_MAX_NDIM = 4
_READ_CHUNK = 1 << 24


def fashion_mnist_root(root=None):
    return root or os.environ.get('FASHION_MNIST_ROOT', DEFAULT_FASHION_MNIST_ROOT)


def _idx_path(root, name):
    for candidate in (osp.join(root, name), osp.join(root, name + '.gz')):
        if osp.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f'Fashion-MNIST file {name}[.gz] not found in {root!r}. {_INSTALL_HINT}')


def _bad_file(path, problem):
    return ValueError(f'{path} {problem}. {_REINSTALL_HINT}')


def _read_into(f, buf):
    """Fill ``buf`` from ``f``; return how many bytes were read (fewer only at end of file)."""
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = f.readinto(view[got:got + _READ_CHUNK])
        if not n:
            break
        got += n
    return got


def _read_idx_stream(f, path, item_shape, max_items):
    magic = f.read(4)
    if len(magic) < 4 or magic[:3] != b'\x00\x00\x08':
        raise _bad_file(path, 'is not an unsigned-byte IDX file (its first bytes are not '
                        '00 00 08 <ndim>)')
    ndim = magic[3]
    want_ndim = None if item_shape is None else 1 + len(item_shape)
    if not 1 <= ndim <= _MAX_NDIM or (want_ndim is not None and ndim != want_ndim):
        raise _bad_file(path, f'declares {ndim} dimensions; expected '
                        f'{want_ndim or f"1 to {_MAX_NDIM}"}')
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise _bad_file(path, 'is truncated inside its IDX header')
    shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], 'big') for i in range(ndim))
    # Dims are checked one by one (and the product taken with Python ints) so that no
    # declared size can overflow or ask for more memory than a real split needs.
    if not 1 <= shape[0] <= max_items:
        raise _bad_file(path, f'declares {shape[0]} items; Fashion-MNIST IDX files hold '
                        f'1 to {max_items}')
    if item_shape is not None and shape[1:] != tuple(item_shape):
        raise _bad_file(path, f'declares items of shape {shape[1:]}; expected '
                        f'{tuple(item_shape)}')
    expected = math.prod(shape)
    max_bytes = max_items * math.prod(IMAGE_SHAPE)
    if expected > max_bytes:
        raise _bad_file(path, f'declares shape {shape} ({expected} bytes); at most '
                        f'{max_bytes} bytes are accepted')
    buf = bytearray(expected)
    got = _read_into(f, buf)
    if got != expected:
        raise _bad_file(path, f'is truncated: header promises {expected} bytes, found {got}')
    if f.read(1):
        raise _bad_file(path, f'has data past the {expected} bytes its header declares '
                        f'(shape {shape})')
    array = np.frombuffer(buf, dtype=np.uint8).reshape(shape)
    array.flags.writeable = False  # as np.frombuffer(bytes) gave before
    return array


def read_idx(path, item_shape=None, max_items=IDX_MAX_ITEMS):
    """Read one unsigned-byte IDX file (plain or gzip) into a read-only numpy array.

    The header is checked before the data is read: ``item_shape`` (if given) is the shape
    every item must have (``(28, 28)`` for images, ``()`` for labels), the first dimension
    must be 1..``max_items``, and the file must hold exactly the declared bytes.
    """
    try:
        if path.endswith('.gz'):
            with gzip.open(path, 'rb') as f:
                return _read_idx_stream(f, path, item_shape, max_items)
        with open(path, 'rb') as f:
            return _read_idx_stream(f, path, item_shape, max_items)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise _bad_file(path, f'is not a complete gzip stream ({e})') from e


def load_fashion_mnist(root=None, split='train'):
    """Return ``(images uint8 [N, 28, 28], labels int64 [N])`` for ``split``."""
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = fashion_mnist_root(root)
    prefix = _PREFIX[split]
    images = read_idx(_idx_path(root, f'{prefix}-images-idx3-ubyte'), item_shape=IMAGE_SHAPE)
    labels_path = _idx_path(root, f'{prefix}-labels-idx1-ubyte')
    labels = read_idx(labels_path, item_shape=()).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f'{root}: {len(images)} images but {len(labels)} labels. '
                         f'{_REINSTALL_HINT}')
    if labels.max() >= len(FASHION_MNIST_CLASSES):
        raise _bad_file(labels_path, f'holds label {int(labels.max())}; Fashion-MNIST labels '
                        f'are 0 to {len(FASHION_MNIST_CLASSES) - 1}')
    return images, labels
