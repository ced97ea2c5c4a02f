"""PSAP vs L1-uniform vs L1-global filter pruning at -30 / -50 / -70 % backbone FLOPs.

On the embedded default (ResNet-18 w16, Fashion-MNIST 56x56), from the dense checkpoint and from
random init, ``--seeds`` seeds each: every run prunes on the same schedule (3 soft-pruning steps,
then fine-tuning; see the configs) on a fixed training subset and exports a slim ticket; its
top-1 is measured on the full test set. The slim tickets from the dense checkpoint at the
``--downstream-targets`` FLOPs reductions are then fine-tuned downstream with the same 64x64
probe configs as ``bench_recprune_vs_imp.py`` (RetinaNet and Semantic FPN), and PSAP's two ideas
are ablated (``adaptive=False``, ``protective=False``) at -50 %.

Prints a mean +- std table and writes ``table.md``, ``summary.json`` (the per-run records are in
``results.json``) and
``quality_vs_flops.png`` to ``--work-dir``. Finished runs are reused, so an interrupted
benchmark continues where it stopped; the dense downstream reference is read from the
RecPrune benchmark's results when it has them (same probe, same seeds) and run otherwise.

Runs go to ``--jobs`` single-thread workers in priority order: all pruning runs, then the
downstream runs in ``--downstream-targets`` order (default -50 % only, so the whole benchmark
stays within 90 minutes on 2 cores; add ``0.3 0.7`` for the full grid, ~40 min more).
"""
import argparse
import os.path as osp
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from mmrecprune import cli
from mmrecprune.benchmarks.plots import errorbars, pyplot, save
from mmrecprune.benchmarks.probe import prepare_inputs, probe_downstream
from mmrecprune.benchmarks.stage_runner import (Pipeline, add_cfg_options, check_cfg_options,
                                                parse_with_scale, read_json, read_results,
                                                train_and_test, write_summary)
from mmrecprune.benchmarks.stats import mean_std, summarise

PRUNE_CFGS = dict(  # from the dense checkpoint; the scratch runs use SCRATCH_CFG + method
    psap='configs/psap/psap_r18-w16_1xb128-4e_fashionmnist.py',
    l1_uniform='configs/l1/l1-uniform_r18-w16_1xb128-4e_fashionmnist.py',
    l1_global='configs/l1/l1-global_r18-w16_1xb128-4e_fashionmnist.py')
SCRATCH_CFG = 'configs/psap/psap-scratch_r18-w16_1xb128-6e_fashionmnist.py'
ABLATIONS = dict(psap_no_adaptive='custom_hooks.0.pruner.adaptive=False',
                 psap_no_protective='custom_hooks.0.pruner.protective=False')
PRUNER_TYPES = dict(psap='PSAPPruner', l1_uniform='L1UniformPruner', l1_global='L1GlobalPruner')
METHODS = ('psap', 'l1_uniform', 'l1_global')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/bench_psap_quality')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--targets', type=float, nargs='+', default=[0.3, 0.5, 0.7],
                        help='fractions of the backbone FLOPs to remove')
    parser.add_argument('--downstream-targets', type=float, nargs='*', default=[0.5],
                        help='targets whose slim tickets (from the dense checkpoint) are '
                             'fine-tuned downstream, in this order (each target adds ~19 min '
                             'on 2 cores; the default keeps the benchmark near 60 min)')
    parser.add_argument('--pretrained',
                        default='work_dirs/embedded_default/pretrain/epoch_6.pth',
                        help='dense classifier checkpoint (trained first if missing)')
    parser.add_argument('--subset', type=int, default=5000,
                        help='training images per epoch (pretrained: 4 epochs, scratch: 6)')
    parser.add_argument('--dense-results',
                        default='work_dirs/bench_recprune_vs_imp/results.json',
                        help="the RecPrune benchmark's results.json, for the dense reference")
    parser.add_argument('--jobs', type=int, default=2, help='runs at once, one thread each')
    add_cfg_options(parser)
    parser.add_argument('--report-only', action='store_true',
                        help='run nothing; tabulate the runs that finished (an interrupted '
                             'benchmark)')
    # faithful: every training (and test) image of the embedded default; a GPU machine
    return parse_with_scale(parser, dict(faithful=dict(subset=60000)))


def prune(pipe, args, init, method, target, seed):
    """One pruning run; returns (top-1, FLOPs kept, params kept, slim ticket path)."""
    tag = f'{init}/{method}/flops{round(100 * target)}/seed{seed}'
    work = osp.join(args.work_dir, tag.replace('/', '_'))
    # no validation during training: tools/test.py scores the final model once
    opts = [f'randomness.seed={seed}', f'train_dataloader.dataset.indices={args.subset}',
            f'custom_hooks.0.pruner.target.flops={target}', 'train_cfg.val_interval=1000']
    if init == 'pretrained':
        base = method if method in PRUNE_CFGS else 'psap'
        cfg = PRUNE_CFGS[base]
        opts += [f'load_from={args.pretrained}']
        if method in ABLATIONS:
            opts.append(ABLATIONS[method])
        last = 'epoch_4.pth'
    else:
        cfg = SCRATCH_CFG
        opts += [f'custom_hooks.0.pruner.type={PRUNER_TYPES[method]}']
        last = 'epoch_6.pth'
    ticket = osp.join(work, 'tickets', 'slim.pth')
    record = train_and_test(pipe, f'prune/{tag}', cfg, work, last,
                            extra=['--cfg-options', *opts], outputs=[ticket])
    if record is None:  # --report-only and not run yet
        return None
    from mmrecprune.tickets import load_ticket
    meta = load_ticket(ticket).meta
    return (record['metrics']['accuracy/top1'], 100 * meta['flops_ratio'],
            100 * meta['params_ratio'], ticket)


def downstream(pipe, args, tag, seed, init_option, dense=False):
    root = osp.join(args.work_dir, 'downstream', tag, f'seed{seed}')
    return probe_downstream(pipe, tag, root, seed, init_option, dense=dense)


def dense_reference(pipe, args, seed):
    """Dense probe scores for ``seed``: the RecPrune benchmark's if it has them."""
    if osp.isfile(args.dense_results):
        done = read_results(args.dense_results)
        det, seg = done.get(f'det/dense/seed{seed}'), done.get(f'seg/dense/seed{seed}')
        if det and seg:
            return dict(mAP=100 * det['metrics']['coco/bbox_mAP'], mIoU=seg['metrics']['mIoU'])
    return downstream(pipe, args, 'dense', seed,
                      f'model.backbone.init_cfg.checkpoint={args.pretrained}', dense=True)


def write_outputs(args, cells):
    rows = ['| init | method | FLOPs removed (target) | FLOPs kept | params kept | top-1 (%) | '
            'det bbox mAP | seg mIoU | seeds |', '|---|---|---|---|---|---|---|---|---|']
    for (init, method, target), c in sorted(cells.items()):
        text = {k: summarise(v, none='', one='') for k, v in c.items()}
        rows.append(f'| {init} | {method} | {100 * target:.0f} % | {text["flops"]} % | '
                    f'{text["params"]} % | {text["top1"]} | {text["mAP"]} | {text["mIoU"]} | '
                    f'{max(map(len, c.values()))} |')
    table = '\n'.join(rows)
    write_summary(args.work_dir, table,
                  {'/'.join(map(str, k)): v for k, v in sorted(cells.items())})
    plot(args, cells)
    return table


def plot(args, cells):
    plt = pyplot()
    panels = (('pretrained', 'top1', 'top-1 (%), from the dense checkpoint'),
              ('scratch', 'top1', 'top-1 (%), from random init'),
              ('pretrained', 'mAP', 'detection bbox mAP (probe)'),
              ('pretrained', 'mIoU', 'segmentation mIoU (probe)'))
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    colors = dict(psap='tab:red', l1_uniform='tab:blue', l1_global='tab:green')
    for ax, (init, metric, label) in zip(axes, panels):
        probe = metric in ('mAP', 'mIoU')
        for i, method in enumerate(METHODS):
            pts = sorted((100 * k[2], v[metric]) for k, v in cells.items()
                         if k[:2] == (init, method) and v[metric])
            if not pts:
                continue
            x = [p[0] for p in pts]
            if probe:  # the probe has occasional failed runs: median line, every seed a dot
                ax.plot(x, [statistics.median(p[1]) for p in pts], marker='o',
                        color=colors[method], label=method)
                for xi, ys in pts:
                    ax.scatter([xi + 0.8 * (i - 1)] * len(ys), ys, s=12, alpha=0.5,
                               color=colors[method])
            else:
                errorbars(ax, [(xi, mean_std(ys)) for xi, ys in pts], color=colors[method],
                          label=method)
        dense = cells.get(('dense', 'dense', 0.0), {}).get(metric)
        if dense and init == 'pretrained':
            ax.axhline(statistics.median(dense) if probe else mean_std(dense)[0], color='k',
                       ls='--', label='dense')
        if probe:
            label += ': median, dots = seeds'
        else:
            label += ', mean +- std'
        ax.set_xlabel('backbone FLOPs removed (%)')
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle('Structured pruning on the embedded default')
    save(fig, osp.join(args.work_dir, 'quality_vs_flops.png'))


def main():
    args = parse_args()
    start = time.time()
    if osp.exists(args.dense_results):  # read at the end: a wrong file is named before any run
        read_results(cli.check_input_file(args.dense_results, '--dense-results'))
    pipe = Pipeline(args.work_dir, threads_per_stage=1 if args.jobs > 1 else None,
                    report_only=args.report_only,
                    cfg_options=check_cfg_options(args.cfg_options))
    prepare_inputs(pipe, args.pretrained)
    runs = [(init, m, t, s) for init in ('pretrained', 'scratch') for t in args.targets
            for m in METHODS for s in args.seeds]
    runs += [('pretrained', m, 0.5, s) for m in ABLATIONS for s in args.seeds]
    cells = {}

    def add(key, **values):
        cell = cells.setdefault(key, dict(top1=[], flops=[], params=[], mAP=[], mIoU=[]))
        for k, v in values.items():
            cell[k].append(v)

    # FIFO pool: every pruning run is queued before any downstream run that waits on one, so a
    # worker never waits on a run that has not started.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        pruned = {r: pool.submit(prune, pipe, args, *r) for r in runs}

        def transfer(init, method, target, seed):
            done = pruned[(init, method, target, seed)].result()
            if done is None:
                return None
            ticket = done[3]
            tag = f'{method}_flops{round(100 * target)}'
            return downstream(pipe, args, tag, seed, f'model.backbone.ticket={ticket}')

        moved = {(m, t, s): pool.submit(transfer, 'pretrained', m, t, s)
                 for t in args.downstream_targets if t in args.targets
                 for m in METHODS for s in args.seeds}
        # last, so that a RecPrune benchmark running alongside has usually finished them
        dense = {s: pool.submit(dense_reference, pipe, args, s) for s in args.seeds}
        for (init, method, target, seed), future in pruned.items():
            if future.result() is None:
                continue
            top1, flops, params, _ = future.result()
            add((init, method, target), top1=top1, flops=flops, params=params)
        dense_metrics = osp.join(osp.dirname(args.pretrained), 'test_metrics.json')
        # one dense checkpoint serves every seed
        add(('dense', 'dense', 0.0), flops=100.0, params=100.0)
        if osp.isfile(dense_metrics):
            add(('dense', 'dense', 0.0), top1=read_json(dense_metrics)['accuracy/top1'])
        for seed, future in dense.items():
            if future.result() is not None:
                add(('dense', 'dense', 0.0), **future.result())
        for (method, target, seed), future in moved.items():
            if future.result() is not None:
                add(('pretrained', method, target), **future.result())
    table = write_outputs(args, cells)
    print('\n' + table)
    print(f'\nwall time of this invocation: {(time.time() - start) / 60:.1f} min; '
          f'plot: {osp.join(args.work_dir, "quality_vs_flops.png")}')


if __name__ == '__main__':
    cli.run_tool(main)
