"""The leaderboard's scores of a ticket: top-1 re-trained, linear probe and the scenes probes
(fine-tuned and frozen) as stages, the dense reference's, and the mask overlap with IMP."""
import os.path as osp
import sys

from mmrecprune.benchmarks.probe import FROZEN, PRETRAIN_CFG
from mmrecprune.benchmarks.stage_runner import read_json, train_and_test

from .grid import DENSE_PROBE_CFG, PROBE_CFG, RETRAIN_CFG, SCENES, data_options, seed_dir


def score_run(pipe, args, name, config, work, options, epochs, images, metric='accuracy/top1'):
    """Train ``config`` for ``epochs`` on ``images`` and test: ``metric`` in % (None if not
    run)."""
    size = args.size
    opts = ['--cfg-options', *data_options(images, size['val_images']),
            f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}', *options]
    record = train_and_test(pipe, name, config, work, f'epoch_{epochs}.pth',
                            extra=opts)
    return None if record is None else record['metrics'][metric]


def retrain_schedule(epochs):
    """The re-training config's warm-up epoch + cosine fitted to ``epochs``."""
    return [f'param_scheduler.1.T_max={max(1, epochs - 1)}', f'param_scheduler.1.end={epochs}']


def probe_schedule(epochs):
    return [f'param_scheduler.0.T_max={epochs}', f'param_scheduler.0.end={epochs}']


def cell_tasks(pipe, args, key, ticket, extra):
    """The score runs of one ticket: ``[(metric name, callable)]``."""
    method, kind, level, seed = key
    size = args.size
    work = osp.join(seed_dir(args, seed), 'scores', f'{method}_{level:g}')
    stage = f'{method}/{level:g}/seed{seed}'
    backbone = [f'model.backbone.ticket={ticket}', *extra, f'randomness.seed={seed}']
    tasks = [
        ('top1', lambda: score_run(
            pipe, args, f'retrain/{stage}', RETRAIN_CFG, osp.join(work, 'retrain'),
            [*backbone, *retrain_schedule(size['retrain_epochs'])], size['retrain_epochs'],
            size['retrain_images'])),
        ('probe', lambda: score_run(
            pipe, args, f'probe/{stage}', PROBE_CFG, osp.join(work, 'probe'),
            [*backbone, *probe_schedule(size['probe_epochs'])], size['probe_epochs'],
            size['probe_images'])),
    ]
    if (level in args.scenes_levels and seed in args.scenes_seeds
            and method in args.scenes_methods):
        tasks += scenes_tasks(pipe, args, stage, work, backbone, dense=False)
    return tasks


def scenes_tasks(pipe, args, stage, work, options, dense):
    tasks = []
    for task, (ticket_cfg, dense_cfg, last, metric) in SCENES[args.size['scenes']].items():
        for mode in args.scenes_modes:
            frozen = mode == 'frozen'
            tag = f'{task}_{mode}'

            def run(task=task, tag=tag, cfg=dense_cfg if dense else ticket_cfg, last=last,
                    metric=metric, frozen=frozen):
                record = train_and_test(pipe, f'{tag}/{stage}', cfg, osp.join(work, tag), last,
                                        extra=['--cfg-options', *options,
                                               *(FROZEN if frozen else [])])
                if record is None:
                    return None
                value = record['metrics'][metric]
                return 100 * value if task == 'det' else value
            tasks.append((tag, run))
    return tasks


def dense_tasks(pipe, args, seed):
    """The dense reference: its top-1 as pretrained, its linear probe, its scenes probes."""
    size = args.size
    work = osp.join(seed_dir(args, seed), 'scores', 'dense')
    metrics = osp.join(work, 'test_metrics.json')

    def top1():
        record = pipe.run(f'test/dense/seed{seed}',
                          [[sys.executable, 'tools/test.py', PRETRAIN_CFG, args.pretrained,
                            '--work-dir', work, '--out-json', metrics, '--force', '--cfg-options',
                            f'test_dataloader.dataset.indices={size["val_images"]}']],
                          [metrics], lambda: read_json(metrics))
        return None if record is None else record['metrics']['accuracy/top1']
    init = f'model.backbone.init_cfg.checkpoint={args.pretrained}'
    tasks = [('top1', top1),
             ('probe', lambda: score_run(
                 pipe, args, f'probe/dense/seed{seed}', DENSE_PROBE_CFG,
                 osp.join(work, 'probe'), [init, f'randomness.seed={seed}',
                                           *probe_schedule(size['probe_epochs'])],
                 size['probe_epochs'], size['probe_images']))]
    if args.scenes_levels and seed in args.scenes_seeds and 'dense' in args.scenes_methods:
        tasks += scenes_tasks(pipe, args, f'dense/seed{seed}', work,
                              [init, f'randomness.seed={seed}'], dense=True)
    return tasks



# pruned from the dense checkpoint IMP prunes
SAME_START = ('recprune', 'recprune_pooled', 'imp_taylor', 'random', 'magnitude')


def mask_jaccards(entries):
    """``{(method, kind, level): [Jaccard of its kept weights with IMP's, per seed]}`` for the
    tickets pruned from the same dense network as IMP's (``random``: the masks PrunedBackbone
    draws for it); the others prune networks of their own, whose masks IMP's cannot share."""
    from mmrecprune.sparsity import mask_overlap, random_masks_like
    from mmrecprune.tickets import load_ticket
    out = {}
    for (method, kind, level, seed), (ticket, extra) in entries.items():
        imp = entries.get(('imp', kind, level, seed))
        if (method not in SAME_START or imp is None
                or not osp.isfile(ticket) or not osp.isfile(imp[0])):
            continue
        imp_masks = load_ticket(imp[0]).masks
        masks = (random_masks_like(load_ticket(ticket).masks, seed) if method == 'random'
                 else load_ticket(ticket).masks)
        if set(masks) != set(imp_masks):  # another model (on-the-fly: first conv kept, ...)
            masks = {k: v for k, v in masks.items() if k in imp_masks}
            imp_masks = {k: v for k, v in imp_masks.items() if k in masks}
        out.setdefault((method, kind, level), []).append(
            mask_overlap(masks, imp_masks)['jaccard'])
    return out

