"""On-the-fly pruning on the embedded default: pruning with no fine-tuning, against one-shot
magnitude pruning of the ordinary dense model, each with and without BN recalibration.

Stages (every one a ``tools/train.py`` / ``tools/test.py`` / ``tools/prune_on_the_fly.py`` run
printed before it runs; finished stages are reused, so an interrupted run continues):

1. **Penalty choice** (``--sweep``): the on-the-fly config at p = 50 % with each coefficient of
   ``--sweep`` on a held-out slice of the *training* images (never the test set); the coefficient
   with the best recovered top-1 is used below (``--penalty`` overrides it).
2. For every seed, on a fixed ``--subset`` of the training images, ``--epochs`` epochs of the
   pretraining recipe: the ordinary dense ResNet-18-w16 (``dense``), the same with hyperspherical
   convs and no penalty (``sphere``: what the layers alone do), and on-the-fly training with the
   penalty for each sparsity of ``--levels`` (``onthefly``).
3. Each model is pruned at the levels (``onthefly`` only at its own p) by the standalone tool:
   top-1 dense, right after pruning (``zero``), with every recovery mode, each with and without
   BN recalibration on ``--bn-images`` training images. Drops are against each model's own
   dense top-1.
4. ``--mbv2``: MobileNetV2 (width 0.5) dense and on-the-fly at 70 % (first conv excluded), then
   a short fine-tune (``--mbv2-finetune-epochs``) of both 70 % tickets with the mask kept.
5. ``--probe``: the downstream probe (64x64 RetinaNet and Semantic FPN, fine-tuned) on the 50 %
   tickets of on-the-fly (chosen recovery) and of magnitude pruning (zeros).

Writes ``table.md``, ``recovery.md``, ``summary.json`` and ``onthefly_vs_sparsity.png`` to
``--work-dir``. The stages are ``mmrecprune/benchmarks/onthefly.py``'s.
"""
import argparse
import json
import os.path as osp
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from mmrecprune import cli
from mmrecprune.benchmarks.onthefly import (DENSE_CFG, OTF_CFG, RECOVERIES, data_options,
                                            level_tag, mobilenet, otf_options, probes, score,
                                            schedule_options, sweep, train)
from mmrecprune.benchmarks.plots import pyplot, save
from mmrecprune.benchmarks.stage_runner import (Pipeline, add_cfg_options, check_cfg_options,
                                                parse_with_scale)
from mmrecprune.benchmarks.stats import summarise


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/bench_onthefly')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--subset', type=int, default=5000, help='training images')
    parser.add_argument('--val-subset', type=int, default=2000, help='test images scored')
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--levels', type=float, nargs='+', default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument('--bn-images', type=int, default=512)
    parser.add_argument('--sweep', type=float, nargs='*', default=[0.3, 1.0, 3.0, 10.0],
                        help='penalty coefficients tried on held-out training images')
    parser.add_argument('--penalty', type=float, help='use this coefficient, no sweep')
    parser.add_argument('--extra-penalties', type=float, nargs='*', default=[],
                        help='also train on-the-fly with these coefficients (rows '
                             'onthefly_pen<c>), e.g. the sweep\'s runner-up')
    parser.add_argument('--mbv2', action='store_true', help='also run the MobileNetV2 part')
    parser.add_argument('--mbv2-finetune-epochs', type=int, default=1)
    parser.add_argument('--probe', action='store_true', help='downstream probe, 50 %% tickets')
    parser.add_argument('--jobs', type=int, default=2, help='runs at once, one thread each')
    add_cfg_options(parser)
    parser.add_argument('--report-only', action='store_true')
    # faithful: every training (and test) image of the embedded default; a GPU machine
    return parse_with_scale(parser, dict(faithful=dict(subset=60000, val_subset=10000)))


def main():
    args = parse_args()
    pipe = Pipeline(args.work_dir, threads_per_stage=1, report_only=args.report_only,
                    cfg_options=check_cfg_options(args.cfg_options))
    start = time.time()
    penalty = sweep(pipe, args)
    if penalty is None:
        raise cli.CLIError('the penalty sweep has not run (report-only)')
    print(f'penalty coefficient: {penalty:g}', flush=True)
    sched = schedule_options(args)
    cells = {}  # (model, level, row) -> [top-1 per seed]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        def seed_jobs(seed):
            root = osp.join(args.work_dir, f'seed{seed}')
            opts = data_options(args, seed)
            jobs = []

            def dense():
                ckpt = train(pipe, args, f'dense/seed{seed}', DENSE_CFG,
                             osp.join(root, 'dense'), opts + sched)
                return [('magnitude', p, score(
                    pipe, args, f'magnitude/{level_tag(p)}/seed{seed}', DENSE_CFG, ckpt,
                    osp.join(root, f'magnitude_{level_tag(p)}'), p, opts)) for p in args.levels]

            def sphere():
                work = osp.join(root, 'sphere')
                ckpt = train(pipe, args, f'sphere/seed{seed}', OTF_CFG, work,
                             opts + sched + otf_options(args, 0.5, 0.0))
                return [('sphere', p, score(
                    pipe, args, f'sphere/{level_tag(p)}/seed{seed}', OTF_CFG, ckpt,
                    osp.join(root, f'sphere_{level_tag(p)}'), p, opts)) for p in args.levels]

            def onthefly(p):
                work = osp.join(root, f'onthefly_{level_tag(p)}')
                ckpt = train(pipe, args, f'onthefly/{level_tag(p)}/seed{seed}', OTF_CFG, work,
                             opts + sched + otf_options(args, p, penalty))
                return [('onthefly', p, score(pipe, args, f'onthefly/{level_tag(p)}/score/seed'
                                              f'{seed}', OTF_CFG, ckpt, osp.join(work, 'score'),
                                              p, opts))]
            def stronger(p, c):
                work = osp.join(root, f'onthefly_pen{c:g}_{level_tag(p)}')
                ckpt = train(pipe, args, f'onthefly_pen{c:g}/{level_tag(p)}/seed{seed}', OTF_CFG,
                             work, opts + sched + otf_options(args, p, c))
                return [(f'onthefly_pen{c:g}', p, score(
                    pipe, args, f'onthefly_pen{c:g}/{level_tag(p)}/score/seed{seed}', OTF_CFG,
                    ckpt, osp.join(work, 'score'), p, opts))]
            jobs.append(dense)
            jobs.append(sphere)
            jobs += [lambda p=p: onthefly(p) for p in args.levels]
            jobs += [lambda p=p, c=c: stronger(p, c) for c in args.extra_penalties
                     for p in args.levels]
            return jobs

        futures = [pool.submit(job) for seed in args.seeds for job in seed_jobs(seed)]
        for future in futures:
            for model, p, rows in future.result():
                if rows is None:
                    continue
                for row, metrics in rows.items():
                    cells.setdefault((model, p, row), []).append(metrics['accuracy/top1'])
    chosen = report(args, cells, penalty)
    gap_histogram(args)
    extra = {}
    if args.mbv2:
        extra['mbv2'] = mobilenet(pipe, args, penalty)
    if args.probe:
        extra['probe'] = probes(pipe, args, penalty, chosen)
    report_extra(args, extra)
    print(f'wall time {(time.time() - start) / 60:.1f} min with {args.jobs} workers')


def mean_std(values):
    """mean +- std over seeds, the value of one seed, '-' for none."""
    return summarise(values, one='')


def drops(cells, model, p, row):
    dense = cells.get((model, p, 'dense'), [])
    return [d - v for d, v in zip(dense, cells.get((model, p, row), []))]


def models_of(args):
    return ['magnitude', 'sphere', 'onthefly'] + [f'onthefly_pen{c:g}'
                                                  for c in args.extra_penalties]


def report(args, cells, penalty):
    """Main table (top-1 drop vs each model's own dense) and the recovery-variant table;
    returns the recovery with the smallest mean drop of on-the-fly at 50 % without BN."""
    levels = args.levels
    head = '| model | row | ' + ' | '.join(f'{100 * p:.0f} %' for p in levels) + ' |'
    lines = [head, '|' + '---|' * (2 + len(levels))]
    for model in models_of(args):
        lines.append(f'| {model} | dense top-1 | ' + ' | '.join(
            mean_std(cells.get((model, p, 'dense'), [])) for p in levels) + ' |')
        for row in ('zero', 'zero+bn', 'filter_abs_signed', 'filter_abs_signed+bn'):
            lines.append(f'| {model} | drop: {row} | ' + ' | '.join(
                mean_std(drops(cells, model, p, row)) for p in levels) + ' |')
    rec = ['| model | recovery | ' + ' | '.join(f'{100 * p:.0f} % (no BN / BN)' for p in levels)
           + ' |', '|' + '---|' * (2 + len(levels))]
    for model in models_of(args):
        for mode in RECOVERIES:
            rec.append(f'| {model} | {mode} | ' + ' | '.join(
                f'{mean_std(drops(cells, model, p, mode))} / '
                f'{mean_std(drops(cells, model, p, mode + "+bn"))}' for p in levels) + ' |')
    p50 = min(levels, key=lambda p: abs(p - 0.5))
    candidates = {m: drops(cells, 'onthefly', p50, m) for m in RECOVERIES}
    chosen = min((m for m in candidates if candidates[m]),
                 key=lambda m: statistics.mean(candidates[m]), default='filter_abs_signed')
    note = (f'\n\nTop-1 drop in points against each model\'s own dense top-1 (mean +- std over '
            f'seeds {args.seeds}), {args.val_subset} Fashion-MNIST test images, no fine-tuning; '
            f'+bn: BN statistics re-estimated on {args.bn_images} training images. Training: '
            f'{args.epochs} epochs on {args.subset} images; on-the-fly penalty {penalty:g}.')
    with open(osp.join(args.work_dir, 'table.md'), 'w') as f:
        f.write('\n'.join(lines) + note + '\n')
    with open(osp.join(args.work_dir, 'recovery.md'), 'w') as f:
        f.write('\n'.join(rec) + note + f'\nSmallest mean drop at {100 * p50:.0f} % without BN '
                f'(on-the-fly): {chosen}.\n')
    with open(osp.join(args.work_dir, 'summary.json'), 'w') as f:
        json.dump({'|'.join(map(str, k)): v for k, v in cells.items()}, f, indent=2)
    print('\n'.join(lines) + note)
    print('\n'.join(rec))
    plot(args, cells)
    return chosen


def plot(args, cells):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    xs = [100 * p for p in args.levels]
    palette = ['tab:gray', 'tab:blue', 'tab:red', 'tab:purple', 'tab:green', 'tab:orange']
    colors = dict(zip(models_of(args), palette))
    for ax, bn in zip(axes, ('', '+bn')):
        for model, color in colors.items():
            for row, style in (('zero', '--'), ('filter_abs_signed', '-')):
                ys = [statistics.mean(drops(cells, model, p, row + bn) or [float('nan')])
                      for p in args.levels]
                ax.plot(xs, ys, style, marker='o', color=color, label=f'{model}, {row}')
        ax.set_title('no fine-tuning' + (', BN recalibrated' if bn else ''))
        ax.set_xlabel('sparsity of every prunable layer (%)')
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('top-1 drop vs own dense (points)')
    axes[0].legend(fontsize=8)
    save(fig, osp.join(args.work_dir, 'onthefly_vs_sparsity.png'))


def gap_histogram(args, layer='backbone.layer3.0.conv2.weight', seed=None):
    """Histogram of one layer's scaled magnitudes (unit filters x sqrt(fan-in)) at the end of
    training: without the penalty (``sphere``) and with it (``onthefly`` at 50 %), with the 50 %
    border of each; the gap the penalty opens."""
    from mmrecprune.fileio import load_mmengine_checkpoint
    from mmrecprune.sparsity import scaled_magnitudes
    plt = pyplot()
    seed = args.seeds[0] if seed is None else seed
    root = osp.join(args.work_dir, f'seed{seed}')
    runs = dict(sphere=osp.join(root, 'sphere'), onthefly=osp.join(root, 'onthefly_p50'))
    runs.update({f'onthefly_pen{c:g}': osp.join(root, f'onthefly_pen{c:g}_p50')
                 for c in args.extra_penalties})
    fig, ax = plt.subplots(figsize=(7, 4))
    for (name, work), color in zip(runs.items(), ('tab:blue', 'tab:red', 'tab:purple',
                                                  'tab:green')):
        ckpt = osp.join(work, f'epoch_{args.epochs}.pth')
        if not osp.isfile(ckpt):
            continue
        weight = load_mmengine_checkpoint(ckpt, map_location='cpu')['state_dict'][layer]
        u = scaled_magnitudes(weight).flatten()
        border = u.kthvalue(u.numel() // 2).values.item()
        ax.hist(u.numpy(), bins=120, range=(0, 3.5), alpha=0.55, color=color, log=True,
                label=f'{name} (50 % border {border:.2f})')
        ax.axvline(border, color=color, linestyle='--')
    ax.set_xlabel(f'|w| of unit-norm filters x sqrt(fan-in), {layer}')
    ax.set_ylabel('weights (log scale)')
    ax.set_title(f'the gap: no penalty (sphere) vs on-the-fly penalty, seed {seed}')
    ax.legend()
    save(fig, osp.join(args.work_dir, 'gap_histogram.png'))


def report_extra(args, extra):
    lines = []
    if extra.get('mbv2'):
        lines += ['| MobileNetV2-w0.5, 70 % | dense top-1 | pruned, no fine-tuning | + BN '
                  f'recalibration | after {args.mbv2_finetune_epochs}-epoch fine-tune | drop '
                  'after fine-tune |', '|---|---|---|---|---|---|']
        for model, runs in extra['mbv2'].items():
            lines.append(f'| {model} | ' + ' | '.join(
                mean_std([r[k] for r in runs])
                for k in ('dense', 'pruned', 'pruned_bn', 'finetuned'))
                + f' | {mean_std([r["dense"] - r["finetuned"] for r in runs])} |')
        lines.append('')
    if extra.get('probe'):
        lines += ['| 50 % ticket | det bbox mAP | seg mIoU |', '|---|---|---|']
        for model, runs in extra['probe'].items():
            lines.append(f'| {model} | {mean_std([r["mAP"] for r in runs])} | '
                         f'{mean_std([r["mIoU"] for r in runs])} |')
    if lines:
        with open(osp.join(args.work_dir, 'extra.md'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
        print('\n'.join(lines))


if __name__ == '__main__':
    cli.run_tool(main)
