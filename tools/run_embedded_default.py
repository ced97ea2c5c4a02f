"""The main job on the embedded default (no ImageNet, no GPU needed).

Runs, reusing every stage that already finished in ``--work-dir``:
scenes data -> dense backbone pretraining on Fashion-MNIST -> RetinaNet and Semantic FPN on the
dense backbone (the reference) -> RecPrune: decoder stage, 7 pruning rounds (79 % sparsity), ticket
export with a per-layer sparsity PNG -> RetinaNet and Semantic FPN fine-tuned on the ticket -> a
results table (printed, and saved as results.json / results.md).

Every stage is the ordinary ``tools/train.py`` / ``tools/test.py`` on a config in ``configs/``,
so each number can be reproduced by hand with the command this script prints.

With ``--jobs 2`` (the default) two stages run side by side, one thread each, every line they
print labelled with the stage's name: one lane makes the scenes and then the dense detector and
segmentor, the other pretrains and then runs RecPrune and the ticket's detector; the ticket's
segmentor goes to whichever lane frees first. One thread per stage is also what the published
figures were measured with, so ``--jobs`` changes the wall time, not the results.
"""
import argparse
import os.path as osp
import sys
import time

from mmrecprune import cli
from mmrecprune.benchmarks.stage_runner import Pipeline, run_parallel, train_and_test

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
    parser.add_argument('--jobs', type=int, choices=(1, 2), default=2,
                        help='stages run side by side, one thread each (default 2: the two '
                        'cores of the machine the figures were measured on)')
    return parser.parse_args()


class Stages:
    """The main job's stages, each a function that runs it (or reuses it, or waits for it
    when another lane runs it: the Pipeline's per-stage lock) and returns its record."""

    def __init__(self, pipe, work_dir):
        self.pipe, self.work_dir = pipe, work_dir
        self.pretrained = osp.join(work_dir, 'pretrain', 'epoch_6.pth')
        self.decoder = osp.join(work_dir, 'recprune_decoder', 'epoch_3.pth')
        self.ticket = osp.join(work_dir, 'recprune', 'tickets', f'round_{ROUNDS}.pth')

    def scenes(self):
        # the downstream configs read data/fashion_scenes/ (their `data_root`)
        return self.pipe.run('scenes', [[sys.executable,
                                         'tools/dataset_converters/make_fashion_scenes.py',
                                         '--out-dir', SCENES_ROOT]],
                             [osp.join(SCENES_ROOT, 'annotations', 'instances_test.json')])

    def pretrain(self):
        return train_and_test(self.pipe, 'pretrain', PRETRAIN_CFG,
                              osp.dirname(self.pretrained), 'epoch_6.pth')

    def recprune(self):
        """The decoder stage on the frozen encoder, then the pruning rounds."""
        self.pretrain()
        dec_dir = osp.dirname(self.decoder)
        decoder = self.pipe.run('recprune_decoder',
                                [[sys.executable, 'tools/train.py', DECODER_CFG, '--work-dir',
                                  dec_dir, '--cfg-options', f'load_from={self.pretrained}']],
                                [self.decoder])
        rec = train_and_test(self.pipe, 'recprune', RECPRUNE_CFG,
                             osp.join(self.work_dir, 'recprune'), f'epoch_{ROUNDS}.pth',
                             extra=['--cfg-options', f'load_from={self.decoder}'],
                             outputs=[self.ticket])
        return rec, decoder

    def downstream(self, task, tag):
        """RetinaNet (``task='det'``) or Semantic FPN (``'semfpn'``) on the dense backbone
        (``tag='dense'``) or the RecPrune ticket (``'recprune'``), after the scenes and the
        stage that makes that backbone."""
        self.scenes()
        if tag == 'dense':
            self.pretrain()
            init_option = f'model.backbone.init_cfg.checkpoint={self.pretrained}'
        else:
            self.recprune()
            init_option = f'model.backbone.ticket={self.ticket}'
        cfg, ckpt = {('det', 'dense'): (DET_CFG, 'epoch_12.pth'),
                     ('semfpn', 'dense'): (SEG_CFG, 'iter_1000.pth'),
                     ('det', 'recprune'): (TICKET_DET_CFG, 'epoch_12.pth'),
                     ('semfpn', 'recprune'): (TICKET_SEG_CFG, 'iter_1000.pth')}[task, tag]
        return train_and_test(self.pipe, f'{task}_{tag}', cfg,
                              osp.join(self.work_dir, f'{task}_{tag}'), ckpt,
                              extra=['--cfg-options', init_option])

    def run(self, jobs):
        """Every stage; with two jobs, in two lanes of about equal length (stage times of
        docs/en/main_job.md: pretraining 6.7 min, RecPrune 13.0, each downstream run 5.8-5.9)."""
        lanes = [lambda: dict(pre=self.pretrain(), rec=self.recprune(),
                              det_recprune=self.downstream('det', 'recprune')),
                 lambda: dict(scenes=self.scenes(),
                              det_dense=self.downstream('det', 'dense'),
                              semfpn_dense=self.downstream('semfpn', 'dense'),
                              semfpn_recprune=self.downstream('semfpn', 'recprune'))]
        records = {}
        for lane_records in run_parallel(lanes, jobs):
            records.update(lane_records)
        return records


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
    # one thread per stage, as the figures were measured (and two stages fill 2 cores)
    pipe = Pipeline(args.work_dir, force=args.force, threads_per_stage=1,
                    label_output=args.jobs > 1)
    total_start = time.time()
    stages = Stages(pipe, args.work_dir)
    records = stages.run(args.jobs)
    pre, (rec, decoder) = records['pre'], records['rec']
    det, seg = records['det_dense'], records['semfpn_dense']
    rec_det, rec_seg = records['det_recprune'], records['semfpn_recprune']
    ticket = stages.ticket
    sparsity = 100 * (1 - 0.8**ROUNDS)

    rows = [('dense ResNet-18-w16 (Fashion-MNIST test)', 'top-1 (%)',
             pre['metrics']['accuracy/top1'], pre['wall_s']),
            ('RetinaNet, dense backbone (scenes test)', 'bbox mAP',
             det['metrics']['coco/bbox_mAP'] * 100, det['wall_s']),
            ('Semantic FPN, dense backbone (scenes test)', 'mIoU', seg['metrics']['mIoU'], seg['wall_s']),
            (f'RecPrune ticket, {sparsity:.1f} % sparse, no retraining', 'top-1 (%)',
             rec['metrics']['accuracy/top1'],
             rec['wall_s'] + decoder['wall_s']),
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
