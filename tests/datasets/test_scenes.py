"""Tests of the "Fashion-MNIST scenes" generator (tiny sizes, a few seconds)."""
import json
import os
import os.path as osp

import numpy as np
import pytest

from mmrecprune.datasets.fashion_mnist_io import FASHION_MNIST_CLASSES, fashion_mnist_root
from mmrecprune.datasets.scenes import (DEFAULT_SCENE_CFG, encode_png, generate_scenes, read_png,
                                        rle_encode)

SIZE = 96
NUM_TRAIN, NUM_TEST = 8, 4
HAVE_FASHION = osp.exists(osp.join(fashion_mnist_root(), 'train-images-idx3-ubyte')) or \
    osp.exists(osp.join(fashion_mnist_root(), 'train-images-idx3-ubyte.gz'))
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason='Fashion-MNIST IDX files missing')


def _generate(out, seed=0, num_train=NUM_TRAIN, num_test=NUM_TEST, **kwargs):
    for split, num in (('train', num_train), ('test', num_test)):
        generate_scenes(str(out), split, num, canvas_size=SIZE, seed=seed, **kwargs)
    return str(out)


def _all_files(root):
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                files[osp.relpath(path, root)] = f.read()
    return files


def _load_coco(root, split):
    with open(osp.join(root, 'annotations', f'instances_{split}.json')) as f:
        return json.load(f)


def rle_decode(rle):
    """Independent decoder of COCO compressed RLE (mirrors pycocotools' rleFrString)."""
    h, w = rle['size']
    s, counts, p = rle['counts'], [], 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    flat = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for c in counts:
        flat[pos:pos + c] = val
        pos += c
        val = not val
    assert pos == h * w, 'RLE counts do not add up to the mask size'
    return flat.reshape((h, w), order='F')


@pytest.fixture(scope='module')
def scenes_dir(tmp_path_factory):
    if not HAVE_FASHION:
        pytest.skip('Fashion-MNIST IDX files missing')
    return _generate(tmp_path_factory.mktemp('scenes'))


@needs_fashion
def test_deterministic(scenes_dir, tmp_path):
    same = _all_files(_generate(tmp_path / 'same'))
    ref = _all_files(scenes_dir)
    assert sorted(same) == sorted(ref)
    assert len(ref) == 2 * (NUM_TRAIN + NUM_TEST) + 2
    for name in ref:
        assert same[name] == ref[name], name
    other = _all_files(_generate(tmp_path / 'other', seed=1))
    images = [n for n in ref if n.startswith(osp.join('train', 'images'))]
    assert all(other[n] != ref[n] for n in images)
    assert other['annotations/instances_train.json'] != ref['annotations/instances_train.json']


@needs_fashion
def test_scene_does_not_depend_on_count(scenes_dir, tmp_path):
    generate_scenes(str(tmp_path), 'train', 3, canvas_size=SIZE, seed=0)
    for i in range(3):
        name = osp.join('train', 'images', f'{i:06d}.png')
        with open(osp.join(scenes_dir, name), 'rb') as a, open(osp.join(tmp_path, name), 'rb') as b:
            assert a.read() == b.read()
    # a smaller regeneration leaves no stale files behind
    out = _generate(tmp_path / 'shrink', num_train=5, num_test=0)
    generate_scenes(out, 'train', 2, canvas_size=SIZE, seed=0)
    assert sorted(os.listdir(osp.join(out, 'train', 'images'))) == ['000000.png', '000001.png']


def _write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b''.join(
        int(d).to_bytes(4, 'big') for d in array.shape)
    with open(path, 'wb') as f:
        f.write(header + array.tobytes())


def test_train_items_for_train_scenes_test_items_for_test_scenes(tmp_path):
    # A fake Fashion-MNIST whose train split only holds class 2 and test split only class 7.
    root = tmp_path / 'fmnist'
    root.mkdir()
    item = np.zeros((28, 28), np.uint8)
    item[4:24, 6:22] = 200
    for prefix, label, n in (('train', 2, 6), ('t10k', 7, 3)):
        _write_idx(root / f'{prefix}-images-idx3-ubyte', np.stack([item] * n))
        _write_idx(root / f'{prefix}-labels-idx1-ubyte', np.full(n, label))
    out = _generate(tmp_path / 'out', fashion_root=str(root))
    for split, cat, n in (('train', 3, 6), ('test', 8, 3)):
        coco = _load_coco(out, split)
        assert coco['annotations']
        assert {a['category_id'] for a in coco['annotations']} == {cat}
        assert {a['source_split'] for a in coco['annotations']} == {split}
        assert all(0 <= a['source_index'] < n for a in coco['annotations'])
        for img in coco['images']:
            labels = read_png(osp.join(out, split, 'labels', img['file_name']))
            assert set(np.unique(labels)) <= {0, cat}


@needs_fashion
def test_real_split_provenance(scenes_dir):
    for split in ('train', 'test'):
        anns = _load_coco(scenes_dir, split)['annotations']
        assert {a['source_split'] for a in anns} == {split}


@needs_fashion
@pytest.mark.parametrize('split', ['train', 'test'])
def test_boxes_masks_and_label_maps(scenes_dir, split):
    coco = _load_coco(scenes_dir, split)
    num = NUM_TRAIN if split == 'train' else NUM_TEST
    assert [im['id'] for im in coco['images']] == list(range(1, num + 1))
    assert [c['name'] for c in coco['categories']] == list(FASHION_MNIST_CLASSES)
    assert [c['id'] for c in coco['categories']] == list(range(1, 11))
    assert len({a['id'] for a in coco['annotations']}) == len(coco['annotations'])
    by_image = {}
    for ann in coco['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann)
    for img in coco['images']:
        assert (img['width'], img['height']) == (SIZE, SIZE)
        image = read_png(osp.join(scenes_dir, split, 'images', img['file_name']))
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        label_map = read_png(osp.join(scenes_dir, split, 'labels', img['file_name']))
        assert label_map.shape == (SIZE, SIZE) and label_map.dtype == np.uint8
        anns = by_image[img['id']]
        assert DEFAULT_SCENE_CFG['min_items'] <= len(anns) <= DEFAULT_SCENE_CFG['max_items']
        expected = np.zeros((SIZE, SIZE), np.uint8)
        for ann in anns:
            assert ann['iscrowd'] == 0 and 1 <= ann['category_id'] <= 10
            mask = rle_decode(ann['segmentation'])
            assert ann['segmentation']['size'] == [SIZE, SIZE]
            assert mask.any()
            assert not (expected[mask] > 0).any(), 'visible masks overlap'
            expected[mask] = ann['category_id']
            assert ann['area'] == mask.sum()
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= SIZE and y + h <= SIZE
            ys, xs = np.nonzero(mask)
            assert [x, y, w, h] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(),
                                    ys.max() + 1 - ys.min()], 'box not tight around the mask'
        np.testing.assert_array_equal(label_map, expected)
        # items are visible: pixels under the masks differ from the background on average
        assert image.std() > 5


def test_rle_encode_edge_cases():
    rng = np.random.default_rng(0)
    cases = [np.zeros((5, 7), bool), np.ones((5, 7), bool), rng.random((13, 9)) > 0.5,
             np.pad(np.ones((40, 30), bool), ((3, 60), (50, 2)))]
    for mask in cases:
        np.testing.assert_array_equal(rle_decode(rle_encode(mask)), mask)


def test_rle_matches_pycocotools():
    mask_util = pytest.importorskip('pycocotools.mask')
    rng = np.random.default_rng(1)
    masks = [np.zeros((5, 7), bool), np.ones((5, 7), bool), rng.random((31, 17)) > 0.3,
             np.pad(np.ones((40, 30), bool), ((3, 60), (50, 2)))]
    for mask in masks:
        ref = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = rle_encode(mask)
        assert ours['counts'] == ref['counts'].decode()
        assert ours['size'] == list(ref['size'])


def test_png_roundtrip_and_third_party_readers(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (11, 13, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (11, 13), dtype=np.uint8)
    for name, arr in (('rgb.png', rgb), ('grey.png', grey)):
        with open(tmp_path / name, 'wb') as f:
            f.write(encode_png(arr))
        np.testing.assert_array_equal(read_png(str(tmp_path / name)), arr)
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'rgb.png')), rgb)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'grey.png')), grey)
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        bgr = cv2.imread(str(tmp_path / 'rgb.png'), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(bgr[..., ::-1], rgb)
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'grey.png'),
                                                 cv2.IMREAD_UNCHANGED), grey)


@needs_fashion
def test_mmdet_coco_dataset_loads(scenes_dir):
    pytest.importorskip('mmdet')
    from mmdet.datasets import CocoDataset
    from mmengine.registry import DefaultScope
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    coco = _load_coco(scenes_dir, 'train')
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True)]
    # the scope mmdet's own configs set (default_scope='mmdet'), whatever scope an earlier test
    # in this process left current
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = CocoDataset(data_root=scenes_dir, ann_file='annotations/instances_train.json',
                         data_prefix=dict(img='train/images/'),
                         metainfo=dict(classes=FASHION_MNIST_CLASSES), pipeline=pipeline)
    assert len(ds) == NUM_TRAIN
    assert ds.metainfo['classes'] == FASHION_MNIST_CLASSES
    total = 0
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        anns = [a for a in coco['annotations'] if a['image_id'] == info['img_id']]
        assert len(info['instances']) == len(anns)
        for inst, ann in zip(info['instances'], anns):
            assert inst['bbox_label'] == ann['category_id'] - 1
            x, y, w, h = ann['bbox']
            assert inst['bbox'] == [x, y, x + w, y + h]
        total += len(anns)
        results = ds[i]
        assert results['img'].shape == (SIZE, SIZE, 3)
        label_map = read_png(
            osp.join(scenes_dir, 'train', 'labels', osp.basename(info['img_path'])))
        masks = results['gt_masks'].to_ndarray()
        assert masks.shape == (len(anns), SIZE, SIZE)
        np.testing.assert_array_equal(masks.any(0), label_map > 0)
        for mask, label in zip(masks, results['gt_bboxes_labels']):
            assert (label_map[mask.astype(bool)] == label + 1).all()
    assert total == len(coco['annotations'])


@needs_fashion
@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_cocoeval_scores_perfect_predictions(scenes_dir, iou_type, capsys):
    pytest.importorskip('pycocotools')
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = COCO(osp.join(scenes_dir, 'annotations', 'instances_test.json'))
    dets = [dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'],
                 segmentation=a['segmentation'], score=1.0)
            for a in gt.dataset['annotations']]
    ev = COCOeval(gt, gt.loadRes(dets), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # mAP@[.5:.95]
    assert ev.stats[1] == pytest.approx(1.0)  # mAP@.5
