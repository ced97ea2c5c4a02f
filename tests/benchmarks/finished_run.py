"""A small finished leaderboard run in the real layout, with no training: ``results.json``
records of every stage a ``--scale smoke`` leaderboard of two seeds runs, the files those stages
leave (checkpoints, metrics files; empty, as ``--report-only`` only asks whether they exist)
and real tickets where the leaderboard reads them (costs, mask Jaccard)."""
import json
import os
import os.path as osp
import shutil

SEEDS = (0, 1)
UNSTRUCTURED = ('recprune', 'imp', 'random', 'magnitude')
STRUCTURED = ('psap', 'l1_uniform')
#: the leaderboard's arguments for this run (work dir, pretrained and selfsup dir appended)
ARGS = ['--report-only', '--scale', 'smoke', '--seeds', *map(str, SEEDS), '--methods',
        *UNSTRUCTURED, 'nm', *STRUCTURED, '--scenes-levels', '20', '--scenes-methods',
        'recprune', 'imp', 'dense', '--latency-repeats', '1']
#: smoke: rounds 1 and 2 (20 and 36 % sparse), -50 % FLOPs; retrain 2 epochs, probe 1
LEVELS = dict(unstructured=(20, 36), structured=(50, ))


def _touch(path):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w'):
        pass


def _value(*parts):
    """A made-up but fixed score per cell and seed (no hash: the same in every process)."""
    code = sum((i + 1) * ord(c) for i, c in enumerate('/'.join(map(str, parts))))
    return 50 + (code % 4000) / 100


def make_finished_run(root, tickets):
    """Write the run under ``root`` (``{kind: ticket path}`` of an unstructured and a structured
    ticket to copy where the pruning runs leave theirs); return the leaderboard's argv."""
    work = osp.join(root, 'lb')
    results = {}

    def stage(name, outputs, metrics=None):
        for path in outputs:
            _touch(path)
        results[name] = dict(wall_s=1.0, cmds=[f'python tools/train.py {name}'])
        if metrics is not None:
            results[name]['metrics'] = metrics

    def scored(name, folder, last, metric, value):
        stage(name, [osp.join(folder, last), osp.join(folder, 'test_metrics.json')],
              {metric: value})

    for seed in SEEDS:
        seed_dir = osp.join(work, f'seed{seed}')
        tickets_made = {}
        for level, rounds in zip(LEVELS['unstructured'], (1, 2)):
            for run in ('recprune', 'imp'):
                tickets_made[run, level] = osp.join(seed_dir, run, 'tickets', f'round_{rounds}.pth')
            tickets_made['magnitude', level] = osp.join(seed_dir, f'magnitude_r{rounds}',
                                                        'tickets', 'round_1.pth')
        tickets_made['nm', 50] = osp.join(seed_dir, 'nm_r1', 'tickets', 'round_1.pth')
        tickets_made['magnitude', 50] = osp.join(seed_dir, 'magnitude_s50', 'tickets',
                                                 'round_1.pth')
        for path in tickets_made.values():
            os.makedirs(osp.dirname(path), exist_ok=True)
            shutil.copy(tickets['unstructured'], path)
        for method in STRUCTURED:
            path = osp.join(seed_dir, f'{method}_f50', 'tickets', 'slim.pth')
            os.makedirs(osp.dirname(path), exist_ok=True)
            shutil.copy(tickets['structured'], path)
        cells = [(m, lv) for m in UNSTRUCTURED for lv in LEVELS['unstructured']]
        cells += [('nm', 50), ('magnitude', 50)] + [(m, 50) for m in STRUCTURED]
        for method, level in cells:
            if (method, level, seed) == ('magnitude', 36, 1):
                continue  # a run that never finished: its cells stay empty
            folder = osp.join(seed_dir, 'scores', f'{method}_{level:g}')
            stage_name = f'{method}/{level:g}/seed{seed}'
            scored(f'retrain/{stage_name}', osp.join(folder, 'retrain'), 'epoch_2.pth',
                   'accuracy/top1', _value('top1', method, level, seed))
            if method != 'l1_uniform':  # a structured cell without its probe
                scored(f'probe/{stage_name}', osp.join(folder, 'probe'), 'epoch_1.pth',
                       'accuracy/top1', _value('probe', method, level, seed))
            if level == 20 and method in ('recprune', 'imp'):
                _scenes(scored, stage_name, folder, seed)
        dense = osp.join(seed_dir, 'scores', 'dense')
        stage(f'test/dense/seed{seed}', [osp.join(dense, 'test_metrics.json')],
              {'accuracy/top1': _value('dense', seed)})
        scored(f'probe/dense/seed{seed}', osp.join(dense, 'probe'), 'epoch_1.pth',
               'accuracy/top1', _value('dense probe', seed))
        _scenes(scored, f'dense/seed{seed}', dense, seed)
    with open(osp.join(work, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    pretrained = osp.join(root, 'dense.pth')
    shutil.copy(tickets['structured'], pretrained)  # any torch.save archive
    return [*ARGS, '--work-dir', work, '--pretrained', pretrained,
            '--selfsup-dir', osp.join(root, 'no_selfsup')]


def _scenes(scored, stage_name, folder, seed):
    for tag, last, metric, scale in (('det_finetuned', 'epoch_12.pth', 'coco/bbox_mAP', 0.01),
                                     ('det_frozen', 'epoch_12.pth', 'coco/bbox_mAP', 0.01),
                                     ('seg_finetuned', 'iter_1000.pth', 'mIoU', 1),
                                     ('seg_frozen', 'iter_1000.pth', 'mIoU', 1)):
        if tag == 'seg_frozen' and seed == 1:
            continue  # one seed only: the '(1 seed)' cells
        scored(f'{tag}/{stage_name}', osp.join(folder, tag), last, metric,
               scale * _value(tag, stage_name))
