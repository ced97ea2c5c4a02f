import numpy as np
import pytest

from mmrecprune.datasets import FashionMNIST, ImageNet


def test_fashion_mnist_reads_the_debian_files():
    ds = FashionMNIST(split='test', pipeline=[dict(type='mmrecprune.PackClsInputs')], indices=5)
    assert len(ds) == 5
    sample = ds[0]
    assert sample['inputs'].shape == (3, 28, 28)
    assert int(sample['data_samples'].gt_label) == 9  # first test image is an ankle boot
    assert len(FashionMNIST(split='train', lazy_init=False)) == 60000


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match='apt-get install dataset-fashion-mnist'):
        FashionMNIST(data_root=str(tmp_path), split='train')


def test_truncated_idx_file_is_reported(tmp_path):
    import shutil
    for name in ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'):
        shutil.copy(f'/usr/share/datasets/fashion-mnist/{name}', tmp_path / name)
    import gzip
    with gzip.open(tmp_path / 't10k-images-idx3-ubyte.gz', 'rb') as f:
        data = f.read()
    (tmp_path / 't10k-images-idx3-ubyte.gz').unlink()
    (tmp_path / 't10k-images-idx3-ubyte').write_bytes(data[:1000])
    with pytest.raises(ValueError, match='truncated'):
        FashionMNIST(data_root=str(tmp_path), split='test')


def test_imagenet_folder_and_list_layouts(tmp_path):
    import cv2
    for cls in ('cat', 'dog'):
        (tmp_path / 'train' / cls).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(tmp_path / 'train' / cls / f'{i}.png'),
                        np.full((40, 30, 3), 100 + i, np.uint8))
    pipeline = [dict(type='mmcv.LoadImageFromFile'), dict(type='mmrecprune.RandomResizedCrop', scale=16),
                dict(type='mmrecprune.PackClsInputs')]
    ds = ImageNet(data_root=str(tmp_path), data_prefix='train', pipeline=pipeline)
    assert ds.metainfo['classes'] == ('cat', 'dog')
    assert len(ds) == 4 and ds[3]['inputs'].shape == (3, 16, 16)
    assert int(ds[3]['data_samples'].gt_label) == 1
    (tmp_path / 'train.txt').write_text('dog/0.png 1\ncat/1.png 0\n')
    ds = ImageNet(data_root=str(tmp_path), ann_file='train.txt', data_prefix='train',
                  pipeline=pipeline)
    assert [ds.get_data_info(i)['gt_label'] for i in range(len(ds))] == [1, 0]
    (tmp_path / 'bad.txt').write_text('dog/0.png\n')
    with pytest.raises(ValueError, match='expected "path label"'):
        ImageNet(data_root=str(tmp_path), ann_file='bad.txt', data_prefix='train')
