"""Generate the "Fashion-MNIST scenes" detection / segmentation data set.

    python tools/dataset_converters/make_fashion_scenes.py --out-dir data/fashion_scenes \
        --num-train 2000 --num-test 500 --canvas-size 128 --seed 0

Writes ``{out}/{train,test}/images/*.png``, ``{out}/{train,test}/labels/*.png`` (label maps for
MMSegmentation, 0 = background, 1..10 = class + 1), ``{out}/annotations/instances_{split}.json``
(COCO instances for MMDetection) and ``{out}/meta.json`` (the generation parameters). If
``meta.json`` matches the requested parameters and the files are there, nothing is regenerated
(use ``--force`` to regenerate anyway). A data set made with other parameters, or a folder that
holds something else, is not written over without ``--force``. (``--out`` is the old name of
``--out-dir``, still accepted: ``--out`` names an output file in the other tools.)
"""
import argparse
import json
import os
import os.path as osp
import time
from collections import Counter

from mmrecprune import cli
from mmrecprune.datasets import scenes  # plain numpy: no MMCV needed to prepare the data


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out-dir', dest='out', default='data/fashion_scenes',
                   help='output folder (default data/fashion_scenes)')
    p.add_argument('--out', dest='out', help='deprecated name of --out-dir')
    p.add_argument('--num-train', type=int, default=2000)
    p.add_argument('--num-test', type=int, default=500)
    p.add_argument('--canvas-size', type=int, default=128)
    p.add_argument('--min-items', type=int, default=1)
    p.add_argument('--max-items', type=int, default=4)
    p.add_argument('--min-scale', type=int, default=None,
                   help='smallest item edge in px (default: 3/16 of the canvas, 24 at 128)')
    p.add_argument('--max-scale', type=int, default=None,
                   help='largest item edge in px (default: 1/2 of the canvas, 64 at 128)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--fashion-root', default=None,
                   help='folder with the Fashion-MNIST IDX files (default: $FASHION_MNIST_ROOT '
                        'or /usr/share/datasets/fashion-mnist)')
    p.add_argument('--force', action='store_true',
                   help='regenerate even if up to date, and replace a data set made with other '
                   'parameters (refused without it)')
    return p.parse_args(argv)


def build_meta(args):
    dmin, dmax = scenes.default_scales(args.canvas_size)
    fashion_root = scenes.fashion_mnist_root(args.fashion_root)
    scene_cfg = dict(scenes.DEFAULT_SCENE_CFG)
    scene_cfg.update(canvas_size=args.canvas_size, min_items=args.min_items,
                     max_items=args.max_items,
                     min_scale=dmin if args.min_scale is None else args.min_scale,
                     max_scale=dmax if args.max_scale is None else args.max_scale)
    meta = dict(format_version=scenes.SCENES_FORMAT_VERSION, seed=args.seed,
                num_scenes=dict(train=args.num_train, test=args.num_test),
                fashion_root=osp.abspath(fashion_root), scene_cfg=scene_cfg)
    return json.loads(json.dumps(meta))  # tuples -> lists, as they come back from the file


def _count_pngs(folder):
    if not osp.isdir(folder):
        return -1
    return sum(1 for n in os.listdir(folder) if n.endswith('.png'))


def is_up_to_date(out, meta):
    meta_file = osp.join(out, 'meta.json')
    if not osp.isfile(meta_file):
        return False
    try:
        with open(meta_file) as f:
            if json.load(f) != meta:
                return False
    except (OSError, ValueError):
        return False
    for split, num in meta['num_scenes'].items():
        if num == 0:
            continue
        if not osp.isfile(osp.join(out, 'annotations', f'instances_{split}.json')):
            return False
        for sub in ('images', 'labels'):
            if _count_pngs(osp.join(out, split, sub)) != num:
                return False
    return True


def check_out(out, meta, force):
    """Refuse an ``--out-dir`` this run must not write into (:class:`CLIError`): a file, or unless
    ``force``, a data set made with other parameters (it would be replaced) or a non-empty
    folder that holds no scenes data set. An interrupted run (no ``meta.json`` yet) continues."""
    cli.check_work_dir(out, '--out-dir')
    if force or not osp.isdir(out) or not os.listdir(out):
        return
    meta_file = osp.join(out, 'meta.json')
    if osp.isfile(meta_file):
        try:
            with open(meta_file) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
        if old == meta:
            return
        differ = (sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
                  if isinstance(old, dict) else ['meta.json unreadable'])
        raise cli.CLIError(f'--out-dir {out} holds a scenes data set made with other parameters '
                           f'({", ".join(differ)} differ); pass --force to replace it, or give '
                           'another --out-dir')
    found = sorted(os.listdir(out))
    if not set(found) <= {'train', 'test', 'annotations'}:
        raise cli.CLIError(f'--out-dir {out} is a folder that holds no scenes data set (it has '
                           f'{", ".join(found[:3])}{", ..." if len(found) > 3 else ""}); pass '
                           '--force to write into it anyway, or give another --out-dir')


def summarize(out, splits, classes):
    lines = []
    for split in splits:
        with open(osp.join(out, 'annotations', f'instances_{split}.json')) as f:
            coco = json.load(f)
        per_class = Counter(a['category_id'] for a in coco['annotations'])
        num_img, num_inst = len(coco['images']), len(coco['annotations'])
        lines.append(f'{split:5s}: {num_img} images, {num_inst} instances '
                     f'({num_inst / max(num_img, 1):.2f} per image)')
        counts = ', '.join(f'{classes[c - 1]}: {per_class.get(c, 0)}'
                           for c in range(1, len(classes) + 1))
        lines.append('       ' + counts)
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    cli.check_work_dir(args.out, '--out-dir')
    cli.check_input_dir(scenes.fashion_mnist_root(args.fashion_root),
                        'Fashion-MNIST folder (--fashion-root or $FASHION_MNIST_ROOT)')
    meta = build_meta(args)
    check_out(args.out, meta, args.force)
    splits = [s for s in ('train', 'test') if meta['num_scenes'][s] > 0]
    if not args.force and is_up_to_date(args.out, meta):
        print(f'{args.out} is up to date (same parameters in meta.json); use --force to '
              'regenerate.')
    else:
        meta_file = osp.join(args.out, 'meta.json')
        if osp.isfile(meta_file):
            os.remove(meta_file)  # written last: an interrupted run is never taken as complete
        for split in splits:
            start = time.time()
            res = scenes.generate_scenes(
                args.out, split, meta['num_scenes'][split], canvas_size=args.canvas_size,
                min_items=args.min_items, max_items=args.max_items,
                min_scale=meta['scene_cfg']['min_scale'],
                max_scale=meta['scene_cfg']['max_scale'], seed=args.seed,
                fashion_root=args.fashion_root)
            print(f'generated {res["num_images"]} {split} scenes in {time.time() - start:.1f} s')
        with open(meta_file, 'w') as f:
            json.dump(meta, f, indent=2, sort_keys=True)
    print(summarize(args.out, splits, scenes.FASHION_MNIST_CLASSES))


if __name__ == '__main__':
    cli.run_tool(main)
