"""The main job on the embedded default (no ImageNet, no GPU needed).

Runs, reusing every stage that already finished in ``--work-dir``:
scenes data -> dense backbone pretraining on Fashion-MNIST -> RetinaNet and FCN fine-tuning on
the dense backbone -> a results table (printed, and saved as results.json / results.md).

Every stage is the ordinary ``tools/train.py`` / ``tools/test.py`` on a config in ``configs/``,
so each number can be reproduced by hand with the command this script prints.
"""
import argparse
import json
import os
import os.path as osp
import shlex
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PRETRAIN_CFG = 'configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py'
DET_CFG = 'configs/downstream/mmdet/retinanet_r18-w16_fpn_12e_fashionscenes.py'
SCENES_ROOT = 'data/fashion_scenes'
SEG_CFG = 'configs/downstream/mmseg/fcn_r18-w16-d8_2k_fashionscenes.py'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/embedded_default')
    parser.add_argument('--force', action='store_true', help='recompute every stage')
    return parser.parse_args()


class Pipeline:
    """Runs stages as subprocesses, records wall times, and skips finished stages."""

    def __init__(self, work_dir, force=False):
        self.work_dir = work_dir
        self.force = force
        os.makedirs(work_dir, exist_ok=True)
        self.results_path = osp.join(work_dir, 'results.json')
        self.results = {}
        if osp.isfile(self.results_path) and not force:
            with open(self.results_path) as f:
                self.results = json.load(f)

    def run(self, name, cmds, outputs, read_metrics=None):
        """Run ``cmds`` unless stage ``name`` finished before and its ``outputs`` exist."""
        done = self.results.get(name)
        if done and all(osp.exists(p) for p in outputs) and not self.force:
            print(f'[{name}] reusing the finished stage ({done["wall_s"]:.0f} s)', flush=True)
            return done
        start = time.time()
        for cmd in cmds:
            print(f'[{name}] $ {" ".join(shlex.quote(c) for c in cmd)}', flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)
        record = dict(wall_s=time.time() - start, cmds=[' '.join(c) for c in cmds])
        if read_metrics is not None:
            record['metrics'] = read_metrics()
        self.results[name] = record
        with open(self.results_path, 'w') as f:
            json.dump(self.results, f, indent=2)
        return record


def read_json(path):
    with open(path) as f:
        return json.load(f)


def train_and_test(pipe, name, cfg, work_dir, ckpt_name, extra=()):
    """tools/train.py then tools/test.py on the final checkpoint; returns the stage record."""
    py = sys.executable
    ckpt = osp.join(work_dir, ckpt_name)
    metrics = osp.join(work_dir, 'test_metrics.json')
    cmds = [[py, 'tools/train.py', cfg, '--work-dir', work_dir, *extra],
            [py, 'tools/test.py', cfg, ckpt, '--work-dir', work_dir, '--out', metrics, *extra]]
    return pipe.run(name, cmds, [ckpt, metrics], lambda: read_json(metrics))


def format_table(rows):
    header = '| stage | metric | value | wall time (2 CPU cores) |\n|---|---|---|---|'
    lines = [f'| {stage} | {metric} | {value:.2f} | {wall / 60:.1f} min |'
             for stage, metric, value, wall in rows]
    return '\n'.join([header, *lines])


def main():
    args = parse_args()
    pipe = Pipeline(args.work_dir, force=args.force)
    py = sys.executable
    total_start = time.time()
    # the downstream configs read data/fashion_scenes/ (their `data_root`)
    pipe.run('scenes', [[py, 'tools/dataset_converters/make_fashion_scenes.py',
                         '--out', SCENES_ROOT]],
             [osp.join(SCENES_ROOT, 'annotations', 'instances_test.json')])

    pre_dir = osp.join(args.work_dir, 'pretrain')
    pre = train_and_test(pipe, 'pretrain', PRETRAIN_CFG, pre_dir, 'epoch_6.pth')
    pretrained = osp.join(pre_dir, 'epoch_6.pth')
    init = f'model.backbone.init_cfg.checkpoint={pretrained}'
    det = train_and_test(
        pipe, 'det_dense', DET_CFG, osp.join(args.work_dir, 'det_dense'), 'epoch_12.pth',
        extra=['--cfg-options', init])
    seg = train_and_test(
        pipe, 'seg_dense', SEG_CFG, osp.join(args.work_dir, 'seg_dense'), 'iter_2000.pth',
        extra=['--cfg-options', init])

    rows = [('dense ResNet-18-w16 pretraining (Fashion-MNIST test)', 'top-1 (%)',
             pre['metrics']['accuracy/top1'], pre['wall_s']),
            ('RetinaNet on dense backbone (scenes test)', 'bbox mAP',
             det['metrics']['coco/bbox_mAP'] * 100, det['wall_s']),
            ('FCN on dense backbone (scenes test)', 'mIoU',
             seg['metrics']['mIoU'], seg['wall_s'])]
    table = format_table(rows)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')
    print('\n' + table)
    print(f'\nresults: {osp.join(args.work_dir, "results.json")} '
          f'(this invocation: {(time.time() - total_start) / 60:.1f} min)')


if __name__ == '__main__':
    main()
