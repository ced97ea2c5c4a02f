"""Tiny synthetic data sets written in the real on-disk layouts of ImageNet (mmpretrain's),
COCO and ADE20K, so that the full-size configs run unchanged, at their real input sizes, on a
machine that has none of the real data (tests/e2e/test_full_size_configs.py, and a check of a
config and its data paths before a long run: docs/en/user_guides/prepare_data.md).

The images are noise with a few flat rectangles; the labels are consistent with them (COCO
boxes are the rectangles, ADE20K masks paint them), so every loss and metric has something to
compute. See docs/en/user_guides/prepare_data.md for the layouts themselves.
"""
import json
import os
import os.path as osp

import numpy as np

#: the sizes of typical images of each data set (width, height)
IMAGENET_SIZE = (500, 375)
COCO_SIZE = (640, 480)
ADE20K_SIZE = (683, 512)


def _imwrite(path, array):
    import cv2  # OpenCV comes with mmcv; imported here so that the module imports without it
    os.makedirs(osp.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, array):
        raise OSError(f'could not write {path}')


def _image(rng, size, boxes=()):
    width, height = size
    img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        img[y0:y1, x0:x1] = rng.integers(0, 256, 3, dtype=np.uint8)
    return img


def _boxes(rng, size, count):
    width, height = size
    boxes = []
    for _ in range(count):
        w, h = int(rng.integers(40, width // 2)), int(rng.integers(40, height // 2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        boxes.append((x0, y0, x0 + w, y0 + h))
    return boxes


def write_imagenet(root, num_train=4, num_val=2, num_classes=1000, seed=0):
    """``root/{train,val}/<wnid>/<name>.JPEG`` and ``root/meta/{train,val}.txt`` (``path
    label`` per line), the layout of mmpretrain's ImageNet; returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, count in (('train', num_train), ('val', num_val)):
        lines = []
        for i in range(count):
            label = int(rng.integers(0, num_classes))
            wnid = f'n{label:08d}'
            name = f'{wnid}/{split}_{i:05d}.JPEG'
            _imwrite(osp.join(root, split, name), _image(rng, IMAGENET_SIZE))
            lines.append(f'{name} {label}\n')
        os.makedirs(osp.join(root, 'meta'), exist_ok=True)
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
    return root


def coco_classes():
    """The 80 COCO category names in the order mmdet's ``CocoDataset`` expects."""
    from mmdet.datasets import CocoDataset
    return CocoDataset.METAINFO['classes']


def write_coco(root, num_train=4, num_val=2, boxes_per_image=3, seed=0):
    """``root/{train2017,val2017}/*.jpg`` and ``root/annotations/instances_{train,val}2017
    .json`` (COCO's own layout and json schema, the 80 categories); returns ``root``."""
    rng = np.random.default_rng(seed)
    categories = [dict(id=i + 1, name=name, supercategory='none')
                  for i, name in enumerate(coco_classes())]
    for split, count in (('train2017', num_train), ('val2017', num_val)):
        images, annotations = [], []
        for i in range(count):
            image_id = i + 1
            file_name = f'{image_id:012d}.jpg'
            boxes = _boxes(rng, COCO_SIZE, boxes_per_image)
            _imwrite(osp.join(root, split, file_name), _image(rng, COCO_SIZE, boxes))
            images.append(dict(id=image_id, file_name=file_name, width=COCO_SIZE[0],
                               height=COCO_SIZE[1]))
            for x0, y0, x1, y1 in boxes:
                w, h = x1 - x0, y1 - y0
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=image_id, iscrowd=0, area=float(w * h),
                    category_id=int(rng.integers(1, len(categories) + 1)),
                    bbox=[float(x0), float(y0), float(w), float(h)],
                    segmentation=[[x0, y0, x1, y0, x1, y1, x0, y1]]))
        os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return root


def write_ade20k(root, num_train=4, num_val=2, num_classes=150, seed=0):
    """``root/images/{training,validation}/*.jpg`` and ``root/annotations/{training,validation}
    /*.png`` (label maps: 0 = "other", 1..150 the classes), ADEChallengeData2016's layout;
    ``root`` is the ``ADEChallengeData2016`` folder. Returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, count in (('training', num_train), ('validation', num_val)):
        for i in range(count):
            name = f'ADE_{split[:5]}_{i + 1:08d}'
            boxes = _boxes(rng, ADE20K_SIZE, 3)
            _imwrite(osp.join(root, 'images', split, name + '.jpg'),
                     _image(rng, ADE20K_SIZE, boxes))
            label = np.zeros(ADE20K_SIZE[::-1], dtype=np.uint8)
            for x0, y0, x1, y1 in boxes:
                label[y0:y1, x0:x1] = rng.integers(1, num_classes + 1)
            _imwrite(osp.join(root, 'annotations', split, name + '.png'), label)
    return root


#: where the shipped configs look for each data set, relative to the working directory
DATA_ROOTS = dict(imagenet='data/imagenet', coco='data/coco',
                  ade20k='data/ade/ADEChallengeData2016')
WRITERS = dict(imagenet=write_imagenet, coco=write_coco, ade20k=write_ade20k)


def write_layouts(base, names=tuple(DATA_ROOTS), **kwargs):
    """Write the named data sets under ``base`` where the shipped configs look for them
    (``base/data/imagenet`` ...); returns ``{name: root}``."""
    return {name: WRITERS[name](osp.join(base, DATA_ROOTS[name]), **kwargs) for name in names}
