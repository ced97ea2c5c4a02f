"""RecPrune vs IMP tickets at 3, 5 and 7 rounds (48.8 / 67.2 / 79.0 % sparsity), seeds x methods.

For every seed: the decoder stage, one 7-round RecPrune run and one 7-round IMP run (the tickets
of rounds 3, 5 and 7 come from the same run), each ticket's top-1 without retraining, and a
RetinaNet and a Semantic FPN fine-tuned on every ticket and on the dense backbone. The
downstream runs are the *probe* configs: the scenes at 64x64 (a quarter of the default's pixels),
so one detector and one segmenter per ticket and seed fit the benchmark's 90-minute budget.
Prints a mean +- std table and writes ``table.md``, ``summary.json`` (the per-run records are in
``results.json``) and
``downstream_vs_sparsity.png`` to ``--work-dir``. Finished runs are reused, so an interrupted
benchmark continues where it stopped.

Independent runs go to ``--jobs`` workers (one thread each): on 2 cores two single-threaded
runs finish sooner than one two-threaded run after another. Every run is ``tools/train.py`` /
``tools/test.py`` on the configs in ``configs/`` with the options printed before it, so any cell
can be re-run by hand.
"""
import argparse
import os.path as osp
import sys
import time

from mmrecprune import cli
from mmrecprune.benchmarks.plots import errorbars, pyplot, save
from mmrecprune.benchmarks.probe import (DECODER_CFG, LOTTERY_CFGS, prepare_inputs,
                                         probe_downstream)
from mmrecprune.benchmarks.stage_runner import (Pipeline, add_cfg_options, check_cfg_options,
                                                parse_with_scale, read_json, run_parallel,
                                                write_summary)
from mmrecprune.benchmarks.stats import mean_std, summarise


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/bench_recprune_vs_imp')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--pretrained',
                        default='work_dirs/embedded_default/pretrain/epoch_6.pth',
                        help='dense classifier checkpoint (trained first if missing)')
    parser.add_argument('--prune-subset', type=int, default=10000,
                        help='training images per pruning round / decoder epoch')
    parser.add_argument('--rounds', type=int, nargs='+', default=[3, 5, 7],
                        help='rounds whose tickets are scored (the runs prune max(rounds))')
    parser.add_argument('--prune-options', nargs='*', default=[],
                        help='extra --cfg-options for the two pruning runs only (an '
                             'investigation, e.g. optim_wrapper.optimizer.lr=0.003); '
                             '--cfg-options applies to every run')
    parser.add_argument('--no-dense', action='store_true',
                        help='skip the dense downstream reference (an investigation run)')
    parser.add_argument('--jobs', type=int, default=2, help='runs at once, one thread each')
    add_cfg_options(parser)
    # faithful: every training (and test) image of the embedded default; a GPU machine
    return parse_with_scale(parser, dict(faithful=dict(prune_subset=60000)))


def downstream(pipe, args, tag, seed, init_option):
    root = osp.join(args.work_dir, f'seed{seed}', tag)
    return probe_downstream(pipe, tag, root, seed, init_option, dense=tag == 'dense')


def prune(pipe, args, method, seed, load_from):
    py = sys.executable
    work = osp.join(args.work_dir, f'seed{seed}', method)
    cfg = LOTTERY_CFGS[method]
    last = max(args.rounds)  # one epoch per round
    opts = ['--cfg-options', f'load_from={load_from}', f'randomness.seed={seed}',
            f'train_dataloader.dataset.indices={args.prune_subset}',
            'default_hooks.checkpoint.max_keep_ckpts=-1', f'custom_hooks.0.rounds={last}',
            f'train_cfg.max_epochs={last}', *args.prune_options]
    pipe.run(f'prune/{method}/seed{seed}', [[py, 'tools/train.py', cfg, '--work-dir', work, *opts]],
             [osp.join(work, 'tickets', f'round_{last}.pth')])
    top1 = {}
    for r in args.rounds:  # the checkpoint of round r holds the rewound, pruned weights = the ticket
        metrics = osp.join(work, f'test_round_{r}.json')
        pipe.run(f'top1/{method}/seed{seed}/round{r}',
                 [[py, 'tools/test.py', cfg, osp.join(work, f'epoch_{r}.pth'), '--work-dir', work,
                   '--out-json', metrics]], [metrics])
        top1[r] = read_json(metrics)['accuracy/top1']
    return work, top1


def method_chain(pipe, args, method, seed):
    """Prune (RecPrune: decoder stage first), then fine-tune downstream on each round's ticket."""
    source = args.pretrained
    if method == 'recprune':
        dec_work = osp.join(args.work_dir, f'seed{seed}', 'decoder')
        source = osp.join(dec_work, 'epoch_3.pth')
        pipe.run(f'decoder/seed{seed}',
                 [[sys.executable, 'tools/train.py', DECODER_CFG, '--work-dir', dec_work,
                   '--cfg-options', f'load_from={args.pretrained}', f'randomness.seed={seed}',
                   f'train_dataloader.dataset.indices={args.prune_subset}']], [source])
    work, top1 = prune(pipe, args, method, seed, source)
    cells = []
    for r in args.rounds:
        ticket = osp.join(work, 'tickets', f'round_{r}.pth')
        scores = downstream(pipe, args, f'{method}_r{r}', seed, f'model.backbone.ticket={ticket}')
        cells.append(((method, 100 * (1 - 0.8**r)), dict(top1=top1[r], **scores)))
    return cells


def dense_chain(pipe, args, seed):
    option = f'model.backbone.init_cfg.checkpoint={args.pretrained}'
    return [(('dense', 0.0), downstream(pipe, args, 'dense', seed, option))]


def write_outputs(args, cells):
    rows = ['| backbone | sparsity | top-1 (%) | det bbox mAP | seg mIoU | seeds |',
            '|---|---|---|---|---|---|']
    for key, cell in cells.items():
        rows.append(f'| {key[0]} | {key[1]:.1f} % | {cell_text(cell["top1"])} | '
                    f'{cell_text(cell["mAP"])} | {cell_text(cell["mIoU"])} | '
                    f'{len(cell["mAP"])} |')
    table = '\n'.join(rows)
    write_summary(args.work_dir, table, {f'{k[0]}@{k[1]:.1f}': v for k, v in cells.items()})
    plot(args, cells)
    return table


def cell_text(values):
    """mean +- std over seeds, the value of one seed, '' for none."""
    return summarise(values, none='', one='')


def plot(args, cells):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], 'mAP', 'detection bbox mAP'),
                              (axes[1], 'mIoU', 'segmentation mIoU')):
        for method, color in (('recprune', 'tab:red'), ('imp', 'tab:blue')):
            pts = [(k[1], mean_std(v[metric])) for k, v in cells.items()
                   if k[0] == method and v[metric]]
            if not pts:
                continue
            errorbars(ax, pts, color=color, label=method)
        dense = cells.get(('dense', 0.0), {}).get(metric)
        if dense:
            ax.axhline(mean_std(dense)[0], color='k', ls='--', label='dense')
        ax.set_xlabel('sparsity (%)')
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle('Tickets on the embedded default: downstream score vs sparsity (mean +- std)')
    save(fig, osp.join(args.work_dir, 'downstream_vs_sparsity.png'))


def main():
    args = parse_args()
    start = time.time()
    pipe = Pipeline(args.work_dir, threads_per_stage=1 if args.jobs > 1 else None,
                    cfg_options=check_cfg_options(args.cfg_options))
    prepare_inputs(pipe, args.pretrained)
    cells = {}
    # longest chains first, so the two workers finish together
    tasks = [lambda m=m, s=s: method_chain(pipe, args, m, s)
             for s in args.seeds for m in ('recprune', 'imp')]
    if not args.no_dense:
        tasks += [lambda s=s: dense_chain(pipe, args, s) for s in args.seeds]
    for chain in run_parallel(tasks, args.jobs):
        for key, values in chain:
            cell = cells.setdefault(key, dict(top1=[], mAP=[], mIoU=[]))
            for k, v in values.items():
                cell[k].append(v)
    cells = dict(sorted(cells.items(), key=lambda kv: (kv[0][0] != 'dense', kv[0])))
    table = write_outputs(args, cells)
    print('\n' + table)
    print(f'\nwall time of this invocation: {(time.time() - start) / 60:.1f} min; '
          f'plot: {osp.join(args.work_dir, "downstream_vs_sparsity.png")}')


if __name__ == '__main__':
    cli.run_tool(main)
