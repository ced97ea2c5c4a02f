"""Pruning with self-supervision on the embedded default: do masks found without labels
transfer? Three claims of Caron et al., 3 seeds, mean +- std, a table and a PNG.

For every seed, three pruning runs of the same loop (from scratch, ``--rounds`` rounds of
``--epochs-per-round`` epochs on a fixed ``--subset``-image subset, 20 % of the remaining weights
per round over all convs, late resetting to the weights after one epoch):
RotNet (no labels), S4L-RotNet (10 % labels) and supervised (labels). Then:

* **Claim 1** (paper Fig. 3): at the rounds in ``--levels`` (20 % ... 95.6 % sparse), each mask
  (RotNet, supervised, and random masks of the supervised and of the RotNet mask's per-layer
  sparsity) is re-trained with labels from its rewind weights (``weights='ticket'``; a random
  mask takes the rewind checkpoint of the run whose sparsity it copies) and from a random
  re-initialisation (``weights='random'``), mask fixed
  (``configs/selfsup/label-retrain_r18-w16-ticket_fashionmnist.py``).
* **Claim 2** (paper Fig. 1): a linear probe (``linear-probe_r18-w16-ticket_fashionmnist.py``,
  backbone frozen) on the RotNet tickets, vs sparsity; and at ``--scenes-levels`` the
  frozen-backbone scenes probes (the 64x64 RetinaNet / Semantic FPN probe configs with
  ``frozen_stages=4, norm_eval=True``) on the RotNet and the supervised tickets.
* **Claim 3** (paper Fig. 5): S4L tickets re-trained with labels vs RotNet tickets.

Every run is ``tools/train.py`` / ``tools/test.py`` on a config of ``configs/selfsup/`` with the
options printed before it (so any cell can be re-run by hand); finished runs are reused, so an
interrupted benchmark continues where it stopped. Runs go to ``--jobs`` workers (one thread
each). Writes ``table.md``, ``summary.json`` and ``selfsup_vs_sparsity.png`` to ``--work-dir``.
"""
import argparse
import math
import os.path as osp
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from mmrecprune import cli
from mmrecprune.benchmarks.plots import pyplot, save
from mmrecprune.benchmarks.probe import DET, FROZEN, SCENES64_ARGS, SCENES64_ROOT, SEG
from mmrecprune.benchmarks.stage_runner import (Pipeline, add_cfg_options, check_cfg_options,
                                                parse_with_scale, read_json, train_and_test,
                                                write_summary)
from mmrecprune.benchmarks.stats import mean_std, summarise

PRUNE_CFGS = dict(rotnet='configs/selfsup/rotnet-imp_r18-w16_7r-2e_fashionmnist.py',
                  s4l='configs/selfsup/s4l-imp_r18-w16_7r-2e_fashionmnist.py',
                  supervised='configs/selfsup/supervised-imp_r18-w16_7r-2e_fashionmnist.py')
RETRAIN_CFG = 'configs/selfsup/label-retrain_r18-w16-ticket_fashionmnist.py'
PROBE_CFG = 'configs/selfsup/linear-probe_r18-w16-ticket_fashionmnist.py'
SCENES = dict(det=(DET[1], 'epoch_12.pth', 'coco/bbox_mAP'),
              seg=(SEG[1], 'iter_1000.pth', 'mIoU'))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/bench_selfsup')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--subset', type=int, default=5000,
                        help='training images per epoch (pruning, re-training and probes)')
    parser.add_argument('--val-subset', type=int, default=2000, help='test images scored')
    parser.add_argument('--rounds', type=int, default=14, help='pruning rounds (14: 95.6 %%)')
    parser.add_argument('--epochs-per-round', type=int, default=2)
    parser.add_argument('--levels', type=int, nargs='+', default=[1, 3, 7, 10, 14],
                        help='rounds whose tickets are scored')
    parser.add_argument('--retrain-epochs', type=int, default=3)
    parser.add_argument('--scenes-levels', type=int, nargs='*', default=[7, 14],
                        help='rounds whose RotNet and supervised tickets get the frozen-backbone '
                             'scenes probes (detection and segmentation, 64x64)')
    parser.add_argument('--scenes-seeds', type=int, nargs='*', default=[0])
    parser.add_argument('--jobs', type=int, default=2, help='runs at once, one thread each')
    add_cfg_options(parser)
    parser.add_argument('--report-only', action='store_true',
                        help='run nothing; tabulate what has finished')
    # faithful: every training (and test) image of the embedded default; a GPU machine
    return parse_with_scale(parser, dict(faithful=dict(subset=60000, val_subset=10000,
                                                       retrain_epochs=6)))


def sparsity(rounds):
    return 1 - 0.8 ** rounds


def data_options(args):
    return [f'train_dataloader.dataset.indices={args.subset}',
            f'val_dataloader.dataset.indices={args.val_subset}',
            f'test_dataloader.dataset.indices={args.val_subset}']


def prune(pipe, args, source, seed):
    work = osp.join(args.work_dir, f'seed{seed}', f'prune_{source}')
    iters_per_epoch = math.ceil(args.subset / 128)
    epochs = args.rounds * args.epochs_per_round
    opts = ['--cfg-options', f'randomness.seed={seed}', *data_options(args),
            f'custom_hooks.0.rounds={args.rounds}',
            f'custom_hooks.0.epochs_per_round={args.epochs_per_round}',
            f'custom_hooks.0.pruner.rewind_iter={iters_per_epoch}',
            f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=2',
            'default_hooks.checkpoint.save_best=None']
    tickets = [osp.join(work, 'tickets', f'round_{r}.pth') for r in args.levels]
    # the dense weights at the rewind point, from the pruning state of the last checkpoint: the
    # random-mask control starts from them
    keep_rewind = ('from mmrecprune.fileio import load_mmengine_checkpoint; '
                   'import torch; c = load_mmengine_checkpoint('
                   f'{osp.join(work, f"epoch_{epochs}.pth")!r}); torch.save(dict(state_dict='
                   f'c["lottery_ticket"]["rewind_state"]), {rewind_checkpoint(work)!r})')
    pipe.run(f'prune/{source}/seed{seed}',
             [[sys.executable, 'tools/train.py', PRUNE_CFGS[source], '--work-dir', work, *opts],
              [sys.executable, '-c', keep_rewind]],
             tickets + [rewind_checkpoint(work)])
    return work


def rewind_checkpoint(work):
    """The dense weights at the rewind point (after epoch 1 of round 1)."""
    return osp.join(work, 'rewind_point.pth')


def train_score(pipe, args, name, config, work, options):
    py = sys.executable
    metrics = osp.join(work, 'test_metrics.json')
    epochs = args.retrain_epochs
    opts = ['--cfg-options', *data_options(args), f'train_cfg.max_epochs={epochs}',
            f'train_cfg.val_interval={epochs}', *options]
    ckpt = osp.join(work, f'epoch_{epochs}.pth')
    record = pipe.run(name, [[py, 'tools/train.py', config, '--work-dir', work, *opts],
                             [py, 'tools/test.py', config, ckpt, '--work-dir', work,
                              '--out-json', metrics, *opts]],
                      [metrics], lambda: read_json(metrics))
    return None if record is None else record['metrics']['accuracy/top1']


def retrain_schedule(args):
    """The re-training config's warm-up epoch + cosine, fitted to ``--retrain-epochs`` so
    every run ends with the learning rate decayed (its own schedule spans 6 epochs)."""
    epochs = args.retrain_epochs
    return [f'param_scheduler.1.T_max={epochs - 1}', f'param_scheduler.1.end={epochs}']


RANDOM_CONTROLS = dict(random='supervised', random_rotnet='rotnet')


def retrain_jobs(args, seed, works):
    """(stage name, config, work dir, options, cell key) of every re-training / probe run."""
    root = osp.join(args.work_dir, f'seed{seed}')
    jobs = []
    for r in args.levels:
        # 'random': random positions at the supervised ticket's per-layer sparsity, from the
        # supervised rewind weights; 'random_rotnet': the same at the RotNet ticket's per-layer
        # sparsity, from the RotNet rewind weights (the like-for-like control for the RotNet
        # mask: only the positions differ)
        for source in ('rotnet', 'supervised', 'random', 'random_rotnet', 's4l'):
            mask_source = RANDOM_CONTROLS.get(source, source)
            random_mask = source in RANDOM_CONTROLS
            ticket = osp.join(works[mask_source], 'tickets', f'round_{r}.pth')
            for init in ('rewind', 'reinit'):
                if init == 'reinit' and source in ('s4l', 'random_rotnet'):
                    continue
                weights = 'random' if init == 'reinit' else (
                    rewind_checkpoint(works[mask_source]) if random_mask else 'ticket')
                options = [f'model.backbone.ticket={ticket}', f'model.backbone.weights={weights}',
                           f'model.backbone.masks={"random" if random_mask else "ticket"}',
                           f'model.backbone.seed={seed}', f'randomness.seed={seed}']
                jobs.append((f'retrain/{source}/{init}/r{r}/seed{seed}', RETRAIN_CFG,
                             osp.join(root, f'retrain_{source}_{init}_r{r}'),
                             options + retrain_schedule(args), ('retrain', source, init, r),
                             mask_source))
        ticket = osp.join(works['rotnet'], 'tickets', f'round_{r}.pth')
        jobs.append((f'probe/rotnet/r{r}/seed{seed}', PROBE_CFG,
                     osp.join(root, f'probe_rotnet_r{r}'),
                     [f'model.backbone.ticket={ticket}', f'randomness.seed={seed}'],
                     ('probe', 'rotnet', '-', r), 'rotnet'))
    return jobs


def scenes_jobs(args, seed, works):
    """Claim 2, second half: the frozen-backbone scenes probes (64x64 RetinaNet and Semantic
    FPN, neck and heads train, backbone frozen with BN in eval) on RotNet and supervised
    tickets."""
    jobs = []
    for r in args.scenes_levels:
        for source in ('rotnet', 'supervised'):
            ticket = osp.join(works[source], 'tickets', f'round_{r}.pth')
            for task, (config, last, metric) in SCENES.items():
                work = osp.join(args.work_dir, f'seed{seed}', f'{task}_frozen_{source}_r{r}')
                jobs.append((f'{task}/frozen/{source}/r{r}/seed{seed}', config, work, last,
                             ['--cfg-options', f'model.backbone.ticket={ticket}',
                              f'randomness.seed={seed}', *FROZEN],
                             (task, source, 'frozen', r), source, metric))
    return jobs


def run_scenes(pipe, job):
    name, config, work, last, extra, key, _, metric = job
    record = train_and_test(pipe, name, config, work, last, extra=extra)
    if record is None:
        return key, None
    value = record['metrics'][metric]
    return key, 100 * value if metric == 'coco/bbox_mAP' else value


def report(args, cells, wall):
    levels = args.levels
    header = '| what | mask | init | ' + ' | '.join(
        f'{100 * sparsity(r):.1f} %' for r in levels) + ' |'
    rows = [header, '|' + '---|' * (3 + len(levels))]
    order = dict(retrain=0, probe=1, det=2, seg=3)
    keys = sorted({k[:3] for k in cells}, key=lambda k: (order[k[0]], k))
    for what, source, init in keys:
        rows.append(f'| {what} | {source} | {init} | ' + ' | '.join(
            summarise(cells.get((what, source, init, r), [])) for r in levels) + ' |')
    table = '\n'.join(rows)
    table += (f'\n\nretrain / probe: top-1 (%) on {args.val_subset} Fashion-MNIST test images, '
              f'mean +- std over seeds {args.seeds}; det / seg: frozen-backbone scenes probes '
              f'(bbox mAP / mIoU, %), seeds {args.scenes_seeds}; wall time {wall / 60:.1f} min '
              f'with {args.jobs} workers.')
    print(table)
    write_summary(args.work_dir, table, {'|'.join(map(str, k)): v for k, v in cells.items()})
    plot(args, cells)


def plot(args, cells):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = [100 * sparsity(r) for r in args.levels]
    styles = {'rotnet': 'tab:red', 'supervised': 'tab:blue', 'random': 'tab:gray',
              'random_rotnet': 'tab:orange', 's4l': 'tab:purple'}
    for (what, source, init) in sorted({k[:3] for k in cells if k[0] in ('retrain', 'probe')}):
        means = [(mean_std(cells.get((what, source, init, r), [])) or [float('nan')])[0]
                 for r in args.levels]
        ax = axes[0] if what == 'retrain' else axes[1]
        ax.plot(xs, means, marker='o', color=styles[source],
                linestyle='-' if init in ('rewind', '-') else '--',
                label=f'{source} mask, {init}' if what == 'retrain' else 'RotNet ticket, frozen')
    axes[0].set_title('Claims 1 and 3: masks re-trained with labels')
    axes[1].set_title('Claim 2: linear probe on pruned RotNet features')
    for ax in axes:
        ax.set_xlabel('sparsity (%)')
        ax.set_ylabel('top-1 (%)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, osp.join(args.work_dir, 'selfsup_vs_sparsity.png'))


def main():
    args = parse_args()
    if max(args.levels) > args.rounds:
        raise cli.CLIError(f'--levels go up to round {max(args.levels)}, but --rounds is '
                         f'{args.rounds}')
    pipe = Pipeline(args.work_dir, threads_per_stage=1, report_only=args.report_only,
                    cfg_options=check_cfg_options(args.cfg_options))
    start = time.time()
    cells = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # the long label-free runs first, so the two workers finish together
        pruned = {(source, seed): pool.submit(prune, pipe, args, source, seed)
                  for source in ('rotnet', 's4l', 'supervised') for seed in args.seeds}

        def after_pruning(job, seed):
            name, config, work, options, key, mask_source = job
            pruned[(mask_source, seed)].result()
            return key, train_score(pipe, args, name, config, work, options)

        works = {seed: {s: osp.join(args.work_dir, f'seed{seed}', f'prune_{s}')
                        for s in PRUNE_CFGS} for seed in args.seeds}
        futures = [pool.submit(after_pruning, job, seed) for seed in args.seeds
                   for job in retrain_jobs(args, seed, works[seed])]
        if args.scenes_levels:  # the 64x64 scenes of the probes
            pipe.run('scenes64', [[sys.executable,
                                   'tools/dataset_converters/make_fashion_scenes.py',
                                   *SCENES64_ARGS]],
                     [osp.join(SCENES64_ROOT, 'annotations', 'instances_test.json')])
        for seed in args.scenes_seeds if args.scenes_levels else []:
            for job in scenes_jobs(args, seed, works[seed]):
                def scenes(job=job, seed=seed):
                    pruned[(job[6], seed)].result()
                    return run_scenes(pipe, job)
                futures.append(pool.submit(scenes))
        for future in futures:
            key, value = future.result()
            cells.setdefault(key, []).append(value)
    report(args, cells, time.time() - start)


if __name__ == '__main__':
    cli.run_tool(main)
