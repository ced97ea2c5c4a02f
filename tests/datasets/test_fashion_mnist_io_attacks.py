"""Crafted Fashion-MNIST IDX files: each is refused from its header, before its data is read."""
import gzip
import os
import os.path as osp
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mmrecprune.datasets.fashion_mnist_io import load_fashion_mnist, read_idx

REAL_ROOT = '/usr/share/datasets/fashion-mnist'
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FIX = 'apt-get install --reinstall dataset-fashion-mnist'


def _header(*shape, dtype=0x08):
    return bytes([0, 0, dtype, len(shape)]) + b''.join(d.to_bytes(4, 'big') for d in shape)


def _write_split(root, images, labels=None, gz=False):
    """Write ``images`` (raw bytes) and valid labels for one image as the test split."""
    if labels is None:
        labels = _header(1) + b'\x03'
    for name, data in (('t10k-images-idx3-ubyte', images), ('t10k-labels-idx1-ubyte', labels)):
        if gz:
            (root / f'{name}.gz').write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return str(root)


def test_valid_crafted_split_loads(tmp_path):
    pixels = np.arange(2 * 28 * 28, dtype=np.uint8)
    root = _write_split(tmp_path, _header(2, 28, 28) + pixels.tobytes(),
                        _header(2) + b'\x00\x09', gz=True)
    images, labels = load_fashion_mnist(root, 'test')
    np.testing.assert_array_equal(images, pixels.reshape(2, 28, 28))
    assert labels.tolist() == [0, 9] and labels.dtype == np.int64


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    # Gzip members concatenate, so 96 members of 16 MiB of zeros make a ~1.5 MB file that
    # inflates to 1.5 GiB behind a header declaring one 28x28 image. The old reader inflated it
    # all (seconds, GBs); run it under an address-space limit 512 MB above the current one.
    zeros = gzip.compress(bytes(1 << 24), compresslevel=9)
    bomb = tmp_path / 't10k-images-idx3-ubyte.gz'
    bomb.write_bytes(gzip.compress(_header(1, 28, 28)) + zeros * 96)
    assert bomb.stat().st_size < 2 << 20
    (tmp_path / 't10k-labels-idx1-ubyte').write_bytes(_header(1) + b'\x03')
    script = textwrap.dedent(f"""
        import resource
        from mmrecprune.datasets.fashion_mnist_io import load_fashion_mnist
        with open('/proc/self/status') as f:
            vm = next(int(l.split()[1]) for l in f if l.startswith('VmSize:')) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (512 << 20), resource.RLIM_INFINITY))
        try:
            load_fashion_mnist({str(tmp_path)!r}, 'test')
        except ValueError as e:
            print('REFUSED', e)
        """)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'REFUSED' in proc.stdout and 'data past the 784 bytes' in proc.stdout, proc.stdout
    assert FIX in proc.stdout


@pytest.mark.parametrize('shape, problem', [
    ((0xFFFFFFFF, 28, 28), 'declares 4294967295 items'),
    ((1, 0xFFFFFFFF, 0xFFFFFFFF), r'declares items of shape \(4294967295, 4294967295\)'),
    ((1, 28), 'declares 2 dimensions; expected 3'),
])
def test_huge_or_misshaped_image_header_is_refused(tmp_path, shape, problem):
    root = _write_split(tmp_path, _header(*shape) + bytes(784), gz=True)
    with pytest.raises(ValueError, match=problem) as info:
        load_fashion_mnist(root, 'test')
    assert FIX in str(info.value) and 't10k-images-idx3-ubyte.gz' in str(info.value)


def test_generic_header_whose_product_overflows_int64_is_refused(tmp_path):
    path = tmp_path / 'x-idx4-ubyte'
    path.write_bytes(_header(5, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + bytes(16))
    with pytest.raises(ValueError, match=r'declares shape .* at most 78400000 bytes'):
        read_idx(str(path))


def test_truncated_data_is_refused(tmp_path):
    root = _write_split(tmp_path, _header(3, 28, 28) + bytes(784 * 2))
    with pytest.raises(ValueError, match='truncated: header promises 2352 bytes, found 1568') \
            as info:
        load_fashion_mnist(root, 'test')
    assert FIX in str(info.value)


def test_truncated_header_is_refused(tmp_path):
    root = _write_split(tmp_path, _header(3, 28, 28)[:9])
    with pytest.raises(ValueError, match='truncated inside its IDX header'):
        load_fashion_mnist(root, 'test')


def test_trailing_data_is_refused(tmp_path):
    root = _write_split(tmp_path, _header(1, 28, 28) + bytes(785), gz=True)
    with pytest.raises(ValueError, match='has data past the 784 bytes its header declares') \
            as info:
        load_fashion_mnist(root, 'test')
    assert FIX in str(info.value)


@pytest.mark.parametrize('head', [b'\x00\x00\x0d\x03', b'PK\x03\x04', b'\x00\x00'])
def test_wrong_magic_is_refused(tmp_path, head):
    root = _write_split(tmp_path, head + bytes(784 + 12))
    with pytest.raises(ValueError, match='is not an unsigned-byte IDX file') as info:
        load_fashion_mnist(root, 'test')
    assert FIX in str(info.value)


def test_cut_gzip_stream_is_refused(tmp_path):
    root = _write_split(tmp_path, b'', gz=False)
    data = gzip.compress(_header(1, 28, 28) + os.urandom(784))
    os.remove(osp.join(root, 't10k-images-idx3-ubyte'))
    (tmp_path / 't10k-images-idx3-ubyte.gz').write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='is not a complete gzip stream') as info:
        load_fashion_mnist(root, 'test')
    assert FIX in str(info.value)


def test_label_out_of_range_is_refused(tmp_path):
    root = _write_split(tmp_path, _header(1, 28, 28) + bytes(784), _header(1) + b'\x0a')
    with pytest.raises(ValueError, match='holds label 10; Fashion-MNIST labels are 0 to 9'):
        load_fashion_mnist(root, 'test')


@pytest.mark.skipif(not osp.isdir(REAL_ROOT), reason='dataset-fashion-mnist is not installed')
@pytest.mark.parametrize('split, n, first_label', [('train', 60000, 9), ('test', 10000, 9)])
def test_real_dataset_still_loads(split, n, first_label):
    images, labels = load_fashion_mnist(REAL_ROOT, split)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert int(labels[0]) == first_label and set(labels.tolist()) == set(range(10))
    assert not images.flags.writeable  # as the old np.frombuffer(bytes) gave
