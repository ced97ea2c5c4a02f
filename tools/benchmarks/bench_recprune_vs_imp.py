"""RecPrune vs IMP tickets at 3, 5 and 7 rounds (48.8 / 67.2 / 79.0 % sparsity), seeds x methods.

For every seed: the decoder stage, one 7-round RecPrune run and one 7-round IMP run (the tickets
of rounds 3, 5 and 7 come from the same run), each ticket's top-1 without retraining, and a
shortened RetinaNet / FCN fine-tuning on every ticket and on the dense backbone. Prints a
mean +- std table and writes ``table.md``, ``results.json`` and ``downstream_vs_sparsity.png``
to ``--work-dir``. Finished runs are reused, so an interrupted benchmark continues.

Every run is ``tools/train.py`` / ``tools/test.py`` on the configs in ``configs/`` with the
shortening options below (``--cfg-options``), so any cell can be re-run by hand.
"""
import argparse
import json
import os.path as osp
import statistics
import sys
import time

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
from stage_runner import Pipeline, read_json, train_and_test  # noqa: E402

PRETRAIN_CFG = 'configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py'
DECODER_CFG = 'configs/recprune/recprune_r18-w16_decoder-stage_fashionmnist.py'
METHOD_CFGS = dict(recprune='configs/recprune/recprune_r18-w16_7r-1e_fashionmnist.py',
                   imp='configs/imp/imp_r18-w16_7r-1e_fashionmnist.py')
DET = ('configs/downstream/mmdet/retinanet_r18-w16_fpn_12e_fashionscenes.py',
       'configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py')
SEG = ('configs/downstream/mmseg/fcn_r18-w16-d8_1k_fashionscenes.py',
       'configs/downstream/mmseg/fcn_r18-w16-ticket-d8_1k_fashionscenes.py')
ROUNDS = (3, 5, 7)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/bench_recprune_vs_imp')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--pretrained',
                        default='work_dirs/embedded_default/pretrain/epoch_6.pth',
                        help='dense classifier checkpoint (trained first if missing)')
    parser.add_argument('--prune-subset', type=int, default=10000,
                        help='training images per pruning round / decoder epoch')
    parser.add_argument('--det-scenes', type=int, default=800)
    parser.add_argument('--det-epochs', type=int, default=5)
    parser.add_argument('--seg-iters', type=int, default=400)
    return parser.parse_args()


def det_options(args, seed):
    e = args.det_epochs
    return [f'train_dataloader.dataset.indices={args.det_scenes}', f'train_cfg.max_epochs={e}',
            f'train_cfg.val_interval={e}', f'param_scheduler.1.end={e}',
            f'param_scheduler.1.milestones=[{e - 2},{e - 1}]', f'randomness.seed={seed}']


def seg_options(args, seed):
    n = args.seg_iters
    return [f'train_cfg.max_iters={n}', f'train_cfg.val_interval={n}',
            f'param_scheduler.0.end={n}', f'default_hooks.checkpoint.interval={n}',
            f'randomness.seed={seed}']


def downstream(pipe, args, tag, seed, init_option):
    dense = tag == 'dense'
    root = osp.join(args.work_dir, f'seed{seed}', tag)
    det = train_and_test(pipe, f'det/{tag}/seed{seed}', DET[0] if dense else DET[1],
                         osp.join(root, 'det'), f'epoch_{args.det_epochs}.pth',
                         extra=['--cfg-options', init_option, *det_options(args, seed)])
    seg = train_and_test(pipe, f'seg/{tag}/seed{seed}', SEG[0] if dense else SEG[1],
                         osp.join(root, 'seg'), f'iter_{args.seg_iters}.pth',
                         extra=['--cfg-options', init_option, *seg_options(args, seed)])
    return dict(mAP=100 * det['metrics']['coco/bbox_mAP'], mIoU=seg['metrics']['mIoU'])


def prune(pipe, args, method, seed, load_from):
    py = sys.executable
    work = osp.join(args.work_dir, f'seed{seed}', method)
    cfg = METHOD_CFGS[method]
    opts = ['--cfg-options', f'load_from={load_from}', f'randomness.seed={seed}',
            f'train_dataloader.dataset.indices={args.prune_subset}',
            'default_hooks.checkpoint.max_keep_ckpts=-1']
    pipe.run(f'prune/{method}/seed{seed}', [[py, 'tools/train.py', cfg, '--work-dir', work, *opts]],
             [osp.join(work, 'tickets', f'round_{max(ROUNDS)}.pth')])
    top1 = {}
    for r in ROUNDS:  # the checkpoint of round r holds the rewound, pruned weights = the ticket
        metrics = osp.join(work, f'test_round_{r}.json')
        pipe.run(f'top1/{method}/seed{seed}/round{r}',
                 [[py, 'tools/test.py', cfg, osp.join(work, f'epoch_{r}.pth'), '--work-dir', work,
                   '--out', metrics]], [metrics])
        top1[r] = read_json(metrics)['accuracy/top1']
    return work, top1


def summarise(values):
    if not values:
        return 'n/a'
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}'


def write_outputs(args, cells):
    rows = ['| backbone | sparsity | top-1 (%) | det bbox mAP | seg mIoU | seeds |',
            '|---|---|---|---|---|---|']
    for key, cell in cells.items():
        rows.append(f'| {key[0]} | {key[1]:.1f} % | {summarise(cell["top1"])} | '
                    f'{summarise(cell["mAP"])} | {summarise(cell["mIoU"])} | '
                    f'{len(cell["mAP"])} |')
    table = '\n'.join(rows)
    with open(osp.join(args.work_dir, 'table.md'), 'w') as f:
        f.write(table + '\n')
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump({f'{k[0]}@{k[1]:.1f}': v for k, v in cells.items()}, f, indent=2)
    plot(args, cells)
    return table


def plot(args, cells):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], 'mAP', 'detection bbox mAP'),
                              (axes[1], 'mIoU', 'segmentation mIoU')):
        for method, color in (('recprune', 'tab:red'), ('imp', 'tab:blue')):
            pts = [(k[1], v[metric]) for k, v in cells.items() if k[0] == method and v[metric]]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            means = [statistics.mean(p[1]) for p in pts]
            errs = [statistics.stdev(p[1]) if len(p[1]) > 1 else 0 for p in pts]
            ax.errorbar(xs, means, yerr=errs, marker='o', capsize=3, color=color, label=method)
        dense = cells.get(('dense', 0.0), {}).get(metric)
        if dense:
            ax.axhline(statistics.mean(dense), color='k', ls='--', label='dense')
        ax.set_xlabel('sparsity (%)')
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle('Tickets on the embedded default: downstream score vs sparsity (mean +- std)')
    fig.tight_layout()
    fig.savefig(osp.join(args.work_dir, 'downstream_vs_sparsity.png'), dpi=120)
    plt.close(fig)


def main():
    args = parse_args()
    start = time.time()
    pipe = Pipeline(args.work_dir)
    py = sys.executable
    if not osp.isfile(args.pretrained):
        work = osp.dirname(args.pretrained)
        pipe.run('pretrain', [[py, 'tools/train.py', PRETRAIN_CFG, '--work-dir', work]],
                 [args.pretrained])
    pipe.run('scenes', [[py, 'tools/dataset_converters/make_fashion_scenes.py',
                         '--out', 'data/fashion_scenes']],
             ['data/fashion_scenes/annotations/instances_test.json'])
    cells = {}

    def add(key, **values):
        cell = cells.setdefault(key, dict(top1=[], mAP=[], mIoU=[]))
        for k, v in values.items():
            cell[k].append(v)

    for seed in args.seeds:
        dense = downstream(pipe, args, 'dense', seed,
                           f'model.backbone.init_cfg.checkpoint={args.pretrained}')
        add(('dense', 0.0), **dense)
        dec_work = osp.join(args.work_dir, f'seed{seed}', 'decoder')
        pipe.run(f'decoder/seed{seed}',
                 [[py, 'tools/train.py', DECODER_CFG, '--work-dir', dec_work, '--cfg-options',
                   f'load_from={args.pretrained}', f'randomness.seed={seed}',
                   f'train_dataloader.dataset.indices={args.prune_subset}']],
                 [osp.join(dec_work, 'epoch_3.pth')])
        sources = dict(recprune=osp.join(dec_work, 'epoch_3.pth'), imp=args.pretrained)
        for method in ('imp', 'recprune'):
            work, top1 = prune(pipe, args, method, seed, sources[method])
            for r in ROUNDS:
                ticket = osp.join(work, 'tickets', f'round_{r}.pth')
                scores = downstream(pipe, args, f'{method}_r{r}', seed,
                                    f'model.backbone.ticket={ticket}')
                add((method, 100 * (1 - 0.8**r)), top1=top1[r], **scores)
            print(write_outputs(args, cells), flush=True)
    table = write_outputs(args, cells)
    print('\n' + table)
    print(f'\nwall time of this invocation: {(time.time() - start) / 60:.1f} min; '
          f'plot: {osp.join(args.work_dir, "downstream_vs_sparsity.png")}')


if __name__ == '__main__':
    main()
