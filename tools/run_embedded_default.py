"""The main job on the embedded default (no ImageNet, no GPU needed).

Runs, reusing every stage that already finished in ``--work-dir``:
scenes data -> dense backbone pretraining on Fashion-MNIST -> RetinaNet and Semantic FPN on the
dense backbone (the reference) -> RecPrune: decoder stage, 7 pruning rounds (79 % sparsity), ticket
export with a per-layer sparsity PNG -> RetinaNet and Semantic FPN fine-tuned on the ticket -> a
results table (printed, and saved as results.json / results.md).

Every stage is the ordinary ``tools/train.py`` / ``tools/test.py`` on a config in ``configs/``,
so each number can be reproduced by hand with the command this script prints.
"""
import argparse
import os.path as osp
import sys
import time

from mmrecprune import cli
from mmrecprune.benchmarks.stage_runner import Pipeline, train_and_test

PRETRAIN_CFG = 'configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py'
DET_CFG = 'configs/downstream/mmdet/retinanet_r18-w16_fpn_12e_fashionscenes.py'
SCENES_ROOT = 'data/fashion_scenes'
SEG_CFG = 'configs/downstream/mmseg/fpn_r18-w16_1k_fashionscenes.py'
DECODER_CFG = 'configs/recprune/recprune_r18-w16_decoder-stage_fashionmnist.py'
RECPRUNE_CFG = 'configs/recprune/recprune_r18-w16_7r-1e_fashionmnist.py'
TICKET_DET_CFG = 'configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py'
TICKET_SEG_CFG = 'configs/downstream/mmseg/fpn_r18-w16-ticket_1k_fashionscenes.py'
ROUNDS = 7


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/embedded_default')
    parser.add_argument('--force', action='store_true', help='recompute every stage')
    return parser.parse_args()


def downstream(pipe, tag, work_root, init_option):
    """RetinaNet and Semantic FPN on one backbone; ``init_option`` points them at it."""
    det_cfg, seg_cfg = (DET_CFG, SEG_CFG) if tag == 'dense' else (TICKET_DET_CFG, TICKET_SEG_CFG)
    det = train_and_test(pipe, f'det_{tag}', det_cfg, osp.join(work_root, f'det_{tag}'),
                         'epoch_12.pth', extra=['--cfg-options', init_option])
    seg = train_and_test(pipe, f'semfpn_{tag}', seg_cfg, osp.join(work_root, f'semfpn_{tag}'),
                         'iter_1000.pth', extra=['--cfg-options', init_option])
    return det, seg


#: What a single run of each metric varies by, measured (docs/en/main_job.md, "What to expect
#: from a fresh clone"): top-1 across three machines, RetinaNet over seeds 0-2 (std), Semantic FPN across
#: machines. A dense-vs-ticket difference inside these is noise, not an effect.
SPREAD = {'top-1 (%)': 'about 0.5 between machines',
          'bbox mAP': 'seed std 0.5-0.6 (1.0-1.1 lowest to highest of 3 seeds)',
          'mIoU': 'up to 1.6 between machines'}


def format_table(rows):
    header = ('| stage | metric | value (one run) | a single run varies by | wall time '
              '(2 CPU cores) |\n|---|---|---|---|---|')
    lines = [f'| {stage} | {metric} | {value:.2f} | {SPREAD[metric]} | {wall / 60:.1f} min |'
             for stage, metric, value, wall in rows]
    note = ('\nEach value is one run (seed 0). A dense-vs-ticket difference smaller than the '
            "spread in its row is noise, not an effect of pruning; the methods' 3-seed "
            'benchmarks in configs/*/README.md are where effects are measured.')
    return '\n'.join([header, *lines]) + '\n' + note


def main():
    args = parse_args()
    pipe = Pipeline(args.work_dir, force=args.force)
    py = sys.executable
    total_start = time.time()
    # the downstream configs read data/fashion_scenes/ (their `data_root`)
    pipe.run('scenes', [[py, 'tools/dataset_converters/make_fashion_scenes.py',
                         '--out-dir', SCENES_ROOT]],
             [osp.join(SCENES_ROOT, 'annotations', 'instances_test.json')])

    pre_dir = osp.join(args.work_dir, 'pretrain')
    pre = train_and_test(pipe, 'pretrain', PRETRAIN_CFG, pre_dir, 'epoch_6.pth')
    pretrained = osp.join(pre_dir, 'epoch_6.pth')
    det, seg = downstream(pipe, 'dense', args.work_dir,
                          f'model.backbone.init_cfg.checkpoint={pretrained}')

    # RecPrune: decoder stage on the frozen encoder, then the pruning rounds
    dec_dir = osp.join(args.work_dir, 'recprune_decoder')
    pipe.run('recprune_decoder',
             [[py, 'tools/train.py', DECODER_CFG, '--work-dir', dec_dir,
               '--cfg-options', f'load_from={pretrained}']],
             [osp.join(dec_dir, 'epoch_3.pth')])
    rec_dir = osp.join(args.work_dir, 'recprune')
    ticket = osp.join(rec_dir, 'tickets', f'round_{ROUNDS}.pth')
    rec = train_and_test(pipe, 'recprune', RECPRUNE_CFG, rec_dir, f'epoch_{ROUNDS}.pth',
                         extra=['--cfg-options', f'load_from={dec_dir}/epoch_3.pth'],
                         outputs=[ticket])
    rec_det, rec_seg = downstream(pipe, 'recprune', args.work_dir,
                                  f'model.backbone.ticket={ticket}')
    sparsity = 100 * (1 - 0.8**ROUNDS)

    rows = [('dense ResNet-18-w16 (Fashion-MNIST test)', 'top-1 (%)',
             pre['metrics']['accuracy/top1'], pre['wall_s']),
            ('RetinaNet, dense backbone (scenes test)', 'bbox mAP',
             det['metrics']['coco/bbox_mAP'] * 100, det['wall_s']),
            ('Semantic FPN, dense backbone (scenes test)', 'mIoU', seg['metrics']['mIoU'], seg['wall_s']),
            (f'RecPrune ticket, {sparsity:.1f} % sparse, no retraining', 'top-1 (%)',
             rec['metrics']['accuracy/top1'],
             rec['wall_s'] + pipe.results['recprune_decoder']['wall_s']),
            ('RetinaNet, RecPrune ticket', 'bbox mAP',
             rec_det['metrics']['coco/bbox_mAP'] * 100, rec_det['wall_s']),
            ('Semantic FPN, RecPrune ticket', 'mIoU', rec_seg['metrics']['mIoU'], rec_seg['wall_s'])]
    table = format_table(rows)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')
    print('\n' + table)
    print(f'per-layer sparsity of the ticket: {ticket[:-4]}_sparsity.png')
    print(f'\nresults: {osp.join(args.work_dir, "results.json")} '
          f'(this invocation: {(time.time() - total_start) / 60:.1f} min)')


if __name__ == '__main__':
    cli.run_tool(main)
