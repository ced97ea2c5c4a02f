""""Fashion-MNIST scenes": a small, deterministic detection / segmentation data set.

Every scene is a ``canvas_size`` x ``canvas_size`` RGB canvas with a mildly textured, noisy grey
background and 1-4 Fashion-MNIST items pasted at random scales and positions. Train scenes only use
items of the Fashion-MNIST train split, test scenes only items of the test split.

Layout written by :func:`generate_scenes`::

    out_dir/
      {split}/images/000000.png   RGB, 8 bit
      {split}/labels/000000.png   grey, 8 bit: 0 = background, 1..10 = class index + 1
                                  (MMSegmentation: num_classes=11, reduce_zero_label=False)
      annotations/instances_{split}.json
                                  COCO instances: bbox [x, y, w, h] (tight around the visible mask,
                                  pixel ``c`` covers ``[c, c + 1)``), area = visible mask pixels,
                                  segmentation = compressed RLE (``counts`` is a str),
                                  category_id 1..10

How a scene is made (all randomness from one generator per scene, seeded by
``(seed, split, scene index)``, so scene ``i`` does not depend on ``num_scenes``):

1. Background: a grey level drawn from ``background_range`` plus a smooth blotchy texture (a coarse
   random grid, bilinearly upsampled; amplitude ``texture_std``).
2. Items, back to front: a random item of the split, bilinearly resized to an edge drawn from
   ``[min_scale, max_scale]``, placed fully inside the canvas, tinted by a random RGB factor in
   ``tint_range`` (colour carries no class information). Its mask is
   ``resized pixel > mask_threshold``; it is pasted with that mask, occluding the items before it.
3. Occlusion: an item may hide parts of earlier items, but every earlier item must keep at least
   ``min_visible`` of its own mask. A placement that would hide more is re-drawn (up to
   ``max_tries`` times); if none fits, the new item is left out. This is how "almost fully occluded"
   items are dropped: the item is never pasted, so no unannotated fragments remain in the image.
   Boxes, areas, RLEs and the label map all come from the final visible masks.
4. Sensor noise: Gaussian noise (``noise_std``) over the whole image, then rounding to uint8.

PNG files are written by a small zlib-based writer (filter 0, fixed compression level), so the
module needs only numpy and the standard library and its output is byte-identical for a seed.
"""
import json
import os
import os.path as osp
import re
import struct
import zlib

import numpy as np

from .fashion_mnist_io import (FASHION_MNIST_CLASSES, fashion_mnist_root,  # noqa: F401
                               load_fashion_mnist)

SPLITS = ('train', 'test')
_SPLIT_CODE = {'train': 0, 'test': 1}
_FILE_RE = re.compile(r'^\d{6}\.png$')

#: Rendering defaults of :func:`generate_scenes` (``make_fashion_scenes.py`` records them in
#: meta.json).
DEFAULT_SCENE_CFG = dict(
    canvas_size=128,
    min_items=1,
    max_items=4,
    min_scale=24,
    max_scale=64,
    min_visible=0.35,
    max_tries=20,
    mask_threshold=24,
    background_range=(60, 140),
    texture_std=14.0,
    texture_grid=6,
    noise_std=6.0,
    tint_range=(0.55, 1.0),
)
#: Bump when the rendering changes, so cached scene folders are regenerated.
SCENES_FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------------
# PNG and RLE helpers (no Pillow / OpenCV / pycocotools needed)
# ------------------------------------------------------------------------------------------------
def _png_chunk(tag, data):
    return (struct.pack('>I', len(data)) + tag + data +
            struct.pack('>I', zlib.crc32(tag + data) & 0xFFFFFFFF))


def encode_png(array, level=6):
    """Encode a uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB) array as PNG bytes."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f'encode_png needs uint8, got {array.dtype}')
    if array.ndim == 2:
        color_type, channels = 0, 1
    elif array.ndim == 3 and array.shape[2] == 3:
        color_type, channels = 2, 3
    else:
        raise ValueError(f'encode_png needs [H, W] or [H, W, 3], got {array.shape}')
    h, w = array.shape[:2]
    raw = np.zeros((h, 1 + w * channels), dtype=np.uint8)  # filter byte 0 ("None") per row
    raw[:, 1:] = array.reshape(h, w * channels)
    header = struct.pack('>IIBBBBB', w, h, 8, color_type, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header) +
            _png_chunk(b'IDAT', zlib.compress(raw.tobytes(), level)) + _png_chunk(b'IEND', b''))


def write_png(path, array):
    with open(path, 'wb') as f:
        f.write(encode_png(array))


def _unfilter(raw, h, stride, bpp):
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, stride + 1)
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(h):
        ftype, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        elif ftype in (1, 3, 4):
            cur = np.zeros(stride, dtype=np.int32)
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                b = prev[x]
                c = prev[x - bpp] if x >= bpp else 0
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                cur[x] = (line[x] + pred) & 0xFF
        else:
            raise ValueError(f'bad PNG filter type {ftype}')
        out[y] = cur
        prev = cur
    return out


def read_png(path):
    """Read an 8-bit grey or RGB, non-interlaced PNG (such as the ones written here)."""
    with open(path, 'rb') as f:
        data = f.read()
    if data[:8] != b'\x89PNG\r\n\x1a\n':
        raise ValueError(f'{path} is not a PNG file')
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, tag = struct.unpack('>I4s', data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if tag == b'IHDR':
            header = struct.unpack('>IIBBBBB', body)
        elif tag == b'IDAT':
            idat.append(body)
        elif tag == b'IEND':
            break
        pos += 12 + length
    w, h, depth, color_type, _, _, interlace = header
    channels = {0: 1, 2: 3}.get(color_type)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f'{path}: only 8-bit grey / RGB non-interlaced PNGs are supported')
    pixels = _unfilter(zlib.decompress(b''.join(idat)), h, w * channels, channels)
    return pixels.reshape(h, w) if channels == 1 else pixels.reshape(h, w, 3)


def rle_encode(mask):
    """COCO compressed RLE of a binary ``[H, W]`` mask, as ``pycocotools.mask.encode`` returns it
    (with ``counts`` decoded to ``str``)."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    flat = mask.ravel(order='F').astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    chars = []
    for i, x in enumerate(counts):
        x = int(x)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return {'size': [h, w], 'counts': ''.join(chars)}


def mask_to_bbox(mask):
    """Tight COCO box ``[x, y, w, h]`` of a binary mask (pixel ``c`` spans ``[c, c + 1)``)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs[0]), float(ys[0]), float(xs[-1] + 1 - xs[0]), float(ys[-1] + 1 - ys[0])]


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------
def _resize_taps(src, dst):
    """Bilinear taps (half-pixel centres, like cv2): ``lo, hi`` indices and the weight of ``hi``."""
    centres = np.clip((np.arange(dst) + 0.5) * (src / dst) - 0.5, 0, src - 1)
    lo = np.floor(centres).astype(np.int64)
    return lo, np.minimum(lo + 1, src - 1), centres - lo


def resize_bilinear(image, out_h, out_w):
    """Bilinear resize of a 2-D float array (plain element-wise arithmetic, no BLAS, so the
    result is bit-identical across machines)."""
    lo, hi, f = _resize_taps(image.shape[0], out_h)
    rows = image[lo] * (1 - f)[:, None] + image[hi] * f[:, None]
    lo, hi, f = _resize_taps(image.shape[1], out_w)
    return rows[:, lo] * (1 - f)[None, :] + rows[:, hi] * f[None, :]


def _background(rng, size, cfg):
    level = rng.uniform(*cfg['background_range'])
    grid = max(int(cfg['texture_grid']), 2)
    coarse = rng.normal(0.0, cfg['texture_std'], size=(grid, grid))
    texture = resize_bilinear(coarse, size, size)
    return np.repeat((level + texture)[:, :, None], 3, axis=2)


def render_scene(rng, images, labels, **cfg):
    """Render one scene from a ``np.random.Generator``.

    Returns ``dict(image=uint8 [S, S, 3], label_map=uint8 [S, S], instances=[...])`` where each
    instance is ``dict(label, source_index, mask (bool [S, S], visible part), bbox, area)``.
    """
    cfg = {**DEFAULT_SCENE_CFG, **cfg}
    size = int(cfg['canvas_size'])
    lo_s, hi_s = int(cfg['min_scale']), int(cfg['max_scale'])
    if not 1 <= lo_s <= hi_s <= size:
        raise ValueError(f'need 1 <= min_scale <= max_scale <= canvas_size, got '
                         f'{lo_s}, {hi_s}, {size}')
    if not 1 <= cfg['min_items'] <= cfg['max_items']:
        raise ValueError('need 1 <= min_items <= max_items')

    canvas = _background(rng, size, cfg)
    owner = np.full((size, size), -1, dtype=np.int64)  # index into `placed` of the top item
    placed = []  # dicts: label, source_index, full_area
    num = int(rng.integers(cfg['min_items'], cfg['max_items'] + 1))
    for _ in range(num):
        idx = int(rng.integers(len(images)))
        scale = int(rng.integers(lo_s, hi_s + 1))
        tint = rng.uniform(*cfg['tint_range'], size=3)
        item = np.clip(resize_bilinear(images[idx].astype(np.float64), scale, scale), 0, 255)
        item_mask = item > cfg['mask_threshold']
        if item_mask.sum() < 4:
            continue
        for _try in range(int(cfg['max_tries'])):
            y0 = int(rng.integers(size - scale + 1))
            x0 = int(rng.integers(size - scale + 1))
            full = np.zeros((size, size), dtype=bool)
            full[y0:y0 + scale, x0:x0 + scale] = item_mask
            hidden = owner[full]
            ok = True
            if hidden.size and placed:
                lost = np.bincount(hidden[hidden >= 0], minlength=len(placed))
                for j, p in enumerate(placed):
                    remaining = np.count_nonzero(owner == j) - lost[j]
                    if remaining < cfg['min_visible'] * p['full_area']:
                        ok = False
                        break
            if ok:
                break
        else:
            continue  # every placement would (almost) hide an earlier item: drop this one
        owner[full] = len(placed)
        patch = canvas[y0:y0 + scale, x0:x0 + scale]
        patch[item_mask] = item[item_mask][:, None] * tint[None, :]
        placed.append(dict(label=int(labels[idx]), source_index=idx,
                           full_area=int(item_mask.sum())))

    noise = rng.normal(0.0, cfg['noise_std'], size=canvas.shape)
    image = np.clip(np.rint(canvas + noise), 0, 255).astype(np.uint8)
    label_map = np.zeros((size, size), dtype=np.uint8)
    instances = []
    for j, p in enumerate(placed):
        mask = owner == j
        label_map[mask] = p['label'] + 1
        instances.append(dict(label=p['label'], source_index=p['source_index'], mask=mask,
                              bbox=mask_to_bbox(mask), area=int(mask.sum())))
    return dict(image=image, label_map=label_map, instances=instances)


def scene_rng(seed, split, index):
    """The generator of scene ``index`` of ``split`` (independent of how many scenes are made)."""
    return np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index)])


def _clear_pngs(folder):
    for name in os.listdir(folder):
        if _FILE_RE.match(name):
            os.remove(osp.join(folder, name))


def default_scales(canvas_size):
    """Default item edge range for a canvas: ``3/16`` to ``1/2`` of it (24..64 px at 128)."""
    return max(1, round(canvas_size * 3 / 16)), max(1, round(canvas_size / 2))


def generate_scenes(out_dir, split='train', num_scenes=2000, canvas_size=128, min_items=1,
                    max_items=4, min_scale=None, max_scale=None, seed=0, fashion_root=None,
                    **render_cfg):
    """Write ``num_scenes`` scenes of ``split`` under ``out_dir`` (see the module docstring).

    Train scenes use Fashion-MNIST train items only and test scenes test items only. The output is
    byte-identical for the same arguments. ``min_scale`` / ``max_scale`` (item edge in pixels)
    default to :func:`default_scales` of the canvas, i.e. 24..64 for 128. Existing
    ``XXXXXX.png`` files of the split are removed first, so a smaller regeneration leaves no stale
    files. Further keyword arguments override
    :data:`DEFAULT_SCENE_CFG` (``min_visible``, ``noise_std``, ...).

    Returns ``dict(split, num_images, num_instances, ann_file, img_dir, label_dir)``.
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    dmin, dmax = default_scales(canvas_size)
    min_scale = dmin if min_scale is None else min_scale
    max_scale = dmax if max_scale is None else max_scale
    unknown = set(render_cfg) - set(DEFAULT_SCENE_CFG)
    if unknown:
        raise TypeError(f'unknown scene options: {sorted(unknown)}')
    cfg = {**DEFAULT_SCENE_CFG, **render_cfg,
           **dict(canvas_size=canvas_size, min_items=min_items, max_items=max_items,
                  min_scale=min_scale, max_scale=max_scale)}
    images, labels = load_fashion_mnist(fashion_root, split)

    img_dir = osp.join(out_dir, split, 'images')
    label_dir = osp.join(out_dir, split, 'labels')
    ann_dir = osp.join(out_dir, 'annotations')
    for d in (img_dir, label_dir, ann_dir):
        os.makedirs(d, exist_ok=True)
    _clear_pngs(img_dir)
    _clear_pngs(label_dir)

    coco_images, coco_anns = [], []
    for i in range(int(num_scenes)):
        scene = render_scene(scene_rng(seed, split, i), images, labels, **cfg)
        name = f'{i:06d}.png'
        write_png(osp.join(img_dir, name), scene['image'])
        write_png(osp.join(label_dir, name), scene['label_map'])
        image_id = i + 1
        coco_images.append(dict(id=image_id, file_name=name, width=canvas_size,
                                height=canvas_size))
        for inst in scene['instances']:
            coco_anns.append(dict(
                id=len(coco_anns) + 1, image_id=image_id, category_id=inst['label'] + 1,
                bbox=inst['bbox'], area=float(inst['area']), iscrowd=0,
                segmentation=rle_encode(inst['mask']),
                source_split=split, source_index=inst['source_index']))

    coco = dict(
        info=dict(description=f'Fashion-MNIST scenes ({split})', version=SCENES_FORMAT_VERSION,
                  seed=int(seed), num_scenes=int(num_scenes),
                  scene_cfg={k: (list(v) if isinstance(v, tuple) else v)
                             for k, v in cfg.items()}),
        licenses=[dict(id=1, name='MIT (Fashion-MNIST, Zalando SE)')],
        images=coco_images, annotations=coco_anns,
        categories=[dict(id=c + 1, name=name, supercategory='fashion')
                    for c, name in enumerate(FASHION_MNIST_CLASSES)])
    ann_file = osp.join(ann_dir, f'instances_{split}.json')
    with open(ann_file, 'w') as f:
        json.dump(coco, f, separators=(',', ':'))
    return dict(split=split, num_images=len(coco_images), num_instances=len(coco_anns),
                ann_file=ann_file, img_dir=img_dir, label_dir=label_dir)
