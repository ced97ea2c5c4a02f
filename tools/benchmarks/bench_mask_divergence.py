"""How far RecPrune's masks move away from IMP's as the training per round grows.

RecPrune and IMP run the same loop (prune 20 % of the remaining weights by global magnitude,
rewind to the pretrained weights) and differ only in the loss of each round's training
(RecPrune adds the frozen decoder's reconstruction loss). With the configs' 78 SGD steps at lr
3e-4 per round the weights barely move, so both masks are those of the pretrained magnitudes.
For every ``--settings`` entry ``IMAGES:LR`` (training images per round and learning rate), this
runs RecPrune and IMP for ``--rounds`` rounds from the same dense checkpoint and seed, and a
second IMP with another seed (how far data order alone moves a mask: the noise floor), and
prints the Jaccard index of the kept sets after every round (``compare_tickets.py``'s measure).

Writes ``table.md``, ``summary.json`` and ``divergence.png`` to ``--work-dir``; finished runs are
reused. Every run is ``tools/train.py`` on the method's config with the options printed before it.
"""
import argparse
import os.path as osp
import sys
import time

from mmrecprune import cli
from mmrecprune.benchmarks.plots import pyplot, save
from mmrecprune.benchmarks.probe import DECODER_CFG, LOTTERY_CFGS, PRETRAIN_CFG
from mmrecprune.benchmarks.stage_runner import (Pipeline, add_cfg_options, check_cfg_options,
                                                check_pretrained, parse_with_scale,
                                                run_parallel, write_summary)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/bench_mask_divergence')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--pretrained',
                        default='work_dirs/embedded_default/pretrain/epoch_6.pth',
                        help='dense classifier checkpoint (trained first if missing)')
    parser.add_argument('--settings', nargs='+',
                        default=['10000:3e-4', '10000:3e-3', '10000:3e-2', '30000:3e-2'],
                        help='IMAGES:LR per round (10000:3e-4 is the configs\' setting, with '
                             'the benchmarks\' 10k-image subset)')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--jobs', type=int, default=2, help='runs at once, one thread each')
    add_cfg_options(parser)
    parser.add_argument('--report-only', action='store_true')
    # faithful: every training (and test) image of the embedded default; a GPU machine
    return parse_with_scale(parser, dict(faithful=dict(
        settings=['60000:3e-4', '60000:3e-3', '60000:3e-2'], rounds=7)))


def parse_setting(text):
    images, lr = text.split(':')
    return int(images), float(lr)


def prune_run(pipe, args, method, seed, images, lr, load_from):
    work = osp.join(args.work_dir, f'{images}_{lr:g}', f'{method}_seed{seed}')
    opts = ['--cfg-options', f'load_from={load_from}', f'randomness.seed={seed}',
            f'train_dataloader.dataset.indices={images}', f'optim_wrapper.optimizer.lr={lr}',
            f'custom_hooks.0.rounds={args.rounds}', f'train_cfg.max_epochs={args.rounds}',
            'default_hooks.checkpoint.max_keep_ckpts=1']
    tickets = [osp.join(work, 'tickets', f'round_{r}.pth') for r in range(1, args.rounds + 1)]
    pipe.run(f'prune/{images}_{lr:g}/{method}/seed{seed}',
             [[sys.executable, 'tools/train.py', LOTTERY_CFGS[method], '--work-dir', work,
               *opts]], tickets)
    return tickets


def jaccards(tickets_a, tickets_b):
    from mmrecprune.sparsity import mask_overlap
    from mmrecprune.tickets import load_ticket
    return [mask_overlap(load_ticket(a).masks, load_ticket(b).masks)['jaccard']
            for a, b in zip(tickets_a, tickets_b)]


def main():
    args = parse_args()
    start = time.time()
    check_pretrained(args.pretrained)
    pipe = Pipeline(args.work_dir, threads_per_stage=1, report_only=args.report_only,
                    cfg_options=check_cfg_options(args.cfg_options))
    if not osp.isfile(args.pretrained):
        pipe.run('pretrain', [[sys.executable, 'tools/train.py',
                               PRETRAIN_CFG,
                               '--work-dir', osp.dirname(args.pretrained)]], [args.pretrained])
    decoder = osp.join(args.work_dir, f'decoder_seed{args.seed}', 'epoch_3.pth')
    pipe.run(f'decoder/seed{args.seed}',
             [[sys.executable, 'tools/train.py', DECODER_CFG, '--work-dir', osp.dirname(decoder),
               '--cfg-options', f'load_from={args.pretrained}', f'randomness.seed={args.seed}',
               'train_dataloader.dataset.indices=10000']], [decoder])
    settings = [parse_setting(s) for s in args.settings]
    tasks = []
    for images, lr in settings:
        for method, seed, source in (('recprune', args.seed, decoder),
                                     ('imp', args.seed, args.pretrained),
                                     ('imp', args.seed + 1, args.pretrained)):
            tasks.append(lambda m=method, s=seed, src=source, i=images, l=lr:
                         prune_run(pipe, args, m, s, i, l, src))
    tickets = run_parallel(tasks, args.jobs)
    rows = ['| images / round | SGD steps / round | lr | round | sparsity | '
            'Jaccard RecPrune vs IMP | Jaccard IMP seed a vs b (noise) |', '|' + '---|' * 7]
    summary = []
    for k, (images, lr) in enumerate(settings):
        rec, imp, imp_b = tickets[3 * k:3 * k + 3]
        if not all(osp.isfile(t) for t in rec + imp + imp_b):
            continue
        j_rec, j_noise = jaccards(rec, imp), jaccards(imp_b, imp)
        for r in range(args.rounds):
            rows.append(f'| {images} | {-(-images // 128)} | {lr:g} | {r + 1} | '
                        f'{100 * (1 - 0.8 ** (r + 1)):.1f} % | {j_rec[r]:.4f} | '
                        f'{j_noise[r]:.4f} |')
        summary.append(dict(images=images, lr=lr, steps=-(-images // 128),
                            jaccard_recprune_imp=j_rec, jaccard_imp_seeds=j_noise))
    table = '\n'.join(rows) + (f'\n\nseed {args.seed} (noise: IMP seed {args.seed + 1}); wall '
                               f'time of this invocation {(time.time() - start) / 60:.1f} min '
                               f'with {args.jobs} workers.')
    print(table)
    write_summary(args.work_dir, table, summary)
    plot(args, summary)


def plot(args, summary):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for k, s in enumerate(summary):
        color = plt.cm.viridis(k / max(1, len(summary) - 1))
        xs = range(1, len(s['jaccard_recprune_imp']) + 1)
        label = f"{s['steps']} steps x lr {s['lr']:g}"
        ax.plot(xs, s['jaccard_recprune_imp'], marker='o', color=color, label=label)
        ax.plot(xs, s['jaccard_imp_seeds'], marker='x', ls='--', color=color)
    ax.set_xlabel('round')
    ax.set_ylabel('Jaccard of kept weights')
    ax.set_title('RecPrune vs IMP (solid) and IMP vs IMP, another seed (dashed)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, osp.join(args.work_dir, 'divergence.png'))


if __name__ == '__main__':
    cli.run_tool(main)
