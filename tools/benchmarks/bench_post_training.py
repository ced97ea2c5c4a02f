"""Post-training structured pruning, no training at all: which recovery buys what.

On a trained checkpoint (default: the embedded classifier), for every ``--flops`` target and
every seed (the seed draws the calibration sample from the train split), one cut is made
(``--importance`` / ``--ranking``, the post-training pruner's selection) and scored on the
test split with every recovery, alone and combined:

* ``cut``: the cut channels removed, nothing else;
* ``+bn``: BN recalibration on the calibration images;
* ``mean``: mean-value recovery (what the cut removed, on average, folded into the next BN);
* ``ls``: least-squares re-fit of the layers that read the cut channels;
* ``ls+mean``: both (the fit with an intercept); each ``... +bn``: then BN recalibration.

With ``--random-control`` the same rows for a random choice of channels (same kept widths
per group as the criterion's cut: only *which* channels differs). Every (target, seed) is a
stage whose rows are written to ``WORK_DIR/stage_f<flops>_s<seed>.json`` as soon as it ends;
a rerun skips finished stages (``--force``: redo them). The summary (mean +- std over seeds,
and each row's loss against dense) goes to ``WORK_DIR/table.md`` and ``results.json``.

    python tools/benchmarks/bench_post_training.py --flops 0.25 0.5 --seeds 0 1 2 \\
        --calibration-images 512 --work-dir work_dirs/bench_post_training
"""
import argparse
import copy
import json
import os
import os.path as osp
import sys
import time

from mmengine.config import DictAction

import mmrecprune  # noqa: F401  registries, safe checkpoint loading
from mmrecprune.analysis.post_training import ridge_arg
from mmrecprune.cli import CLIError, check_torch_archive, check_work_dir, load_config, run_tool


CONFIG = 'configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py'
CHECKPOINT = 'work_dirs/resnet18-w16_1xb128-6e_fashionmnist/epoch_6.pth'
#: (row, reconstruction, BN recalibration)
ROWS = (('cut', None, False), ('cut+bn', None, True), ('mean', 'mean', False),
        ('mean+bn', 'mean', True), ('ls', 'least_squares', False),
        ('ls+bn', 'least_squares', True), ('ls+mean', 'least_squares+mean', False),
        ('ls+mean+bn', 'least_squares+mean', True))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--checkpoint', default=CHECKPOINT)
    parser.add_argument('--flops', type=float, nargs='+', default=[0.25, 0.5],
                        help='fractions of the backbone FLOPs to remove (default 0.25 0.5)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--calibration-images', type=int, default=512)
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--importance', default='L1')
    parser.add_argument('--ranking', default='global', choices=('global', 'uniform'))
    parser.add_argument('--ridge', type=ridge_arg, default='auto',
                        help="'auto' (per layer, on held-out calibration batches) or a number")
    parser.add_argument('--random-control', action='store_true',
                        help='also score a random choice of channels at the same widths')
    parser.add_argument('--test-images', type=int, help='first N test images only')
    parser.add_argument('--work-dir', default='work_dirs/bench_post_training')
    parser.add_argument('--force', action='store_true', help='redo finished stages')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def top1(metrics):
    return float(next(v for k, v in metrics.items() if k.endswith('top1')))


def cached_test_set(runner, cfg, max_images=None):
    """The test split as preprocessed input batches and labels, read once, so that scoring a
    row is a forward pass per batch (the pipeline and the evaluator run once, not per row)."""
    import torch
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    if max_images:
        loader_cfg.dataset['indices'] = int(max_images)
    loader = runner.build_dataloader(loader_cfg)
    inputs, labels = [], []
    with torch.no_grad():
        for batch in loader:
            data = runner.model.data_preprocessor(batch, training=False)
            inputs.append(data['inputs'])
            labels.append(torch.tensor([int(s.gt_label[0]) for s in data['data_samples']]))
    return inputs, labels


def fast_top1(model, test_set):
    """Top-1 (%) of a classifier on a :func:`cached_test_set`: the Accuracy metric's top-1."""
    import torch
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for x, y in zip(*test_set):
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * correct / total


def random_masks(masks, seed):
    """Keep-masks with the same kept count per group as ``masks``, channels drawn at random."""
    import torch
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in masks.items():
        keep = torch.zeros_like(m, dtype=torch.bool)
        keep[torch.randperm(m.numel(), generator=g)[:int(m.sum())].to(m.device)] = True
        out[name] = keep
    return out


def score_rows(pruner, masks, batches, score, args, seed, prefix=''):
    """Every row of :data:`ROWS` for the cut ``masks``, each from a fresh copy of the cut."""
    from mmrecprune.sparsity import apply_channel_masks
    from mmrecprune.sparsity.bn_recalibration import recalibrate_batchnorm
    from mmrecprune.sparsity.least_squares import reconstruct_consumers
    cut = copy.deepcopy(pruner.dense)
    apply_channel_masks(cut, pruner.groups, masks)
    rows, seconds = {}, {}
    done = {}
    for row, reconstruction, bn in ROWS:
        start = time.perf_counter()
        if reconstruction is None:
            model = copy.deepcopy(cut)
        elif reconstruction in done:
            model = copy.deepcopy(done[reconstruction])
        else:
            model = copy.deepcopy(cut)
            reconstruct_consumers(pruner.dense, model, pruner.groups, masks, batches,
                                  reconstruction, ridge=args.ridge, norms=pruner.norms,
                                  seed=seed)
            done[reconstruction] = copy.deepcopy(model)
        if bn:
            recalibrate_batchnorm(model, batches)
        seconds[prefix + row] = time.perf_counter() - start
        model.eval()
        rows[prefix + row] = score(model)
        print(f'  {prefix + row:<22} top-1 {rows[prefix + row]:.2f} '
              f'({seconds[prefix + row]:.1f} s)', flush=True)
    return rows, seconds


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    check_torch_archive(args.checkpoint)
    for f in args.flops:
        if not 0 < f < 1:
            raise CLIError(f'--flops must be fractions in (0, 1), got {f}')
    work = check_work_dir(args.work_dir)
    os.makedirs(work, exist_ok=True)
    cfg.work_dir = osp.join(work, 'runner')

    import torch

    from mmrecprune.analysis import load_exact_weights, offline_runner
    from mmrecprune.analysis.post_training import calibration_batches, test_scorer
    from mmrecprune.benchmarks.stats import mean_std, summarise
    from mmrecprune.methods import PostTrainingPruner
    runner = offline_runner(cfg)
    model = runner.model
    load_exact_weights(model, args.checkpoint)
    model.eval()
    test_set = cached_test_set(runner, cfg, args.test_images)
    dense_path = osp.join(work, 'dense.json')
    if osp.isfile(dense_path) and not args.force:
        dense = json.load(open(dense_path))['top1']
    else:  # the full evaluator once: the fast score must give its top-1
        dense = top1(test_scorer(runner, cfg, args.test_images)(model))
        fast = fast_top1(model, test_set)
        if abs(fast - dense) > 1e-3:  # the evaluator sums in float32
            raise RuntimeError(f'the cached test set scores {fast} where the evaluator gives '
                               f'{dense}')
        json.dump(dict(top1=dense), open(dense_path, 'w'))
    score = lambda m: fast_top1(m, test_set)  # noqa: E731
    print(f'dense top-1 {dense:.2f}', flush=True)
    results = {}
    for flops in args.flops:
        for seed in args.seeds:
            path = osp.join(work, f'stage_f{round(100 * flops)}_s{seed}.json')
            if osp.isfile(path) and not args.force:
                results[(flops, seed)] = json.load(open(path))
                print(f'FLOPs -{flops:.0%} seed {seed}: done before ({path})')
                continue
            print(f'FLOPs -{flops:.0%} seed {seed}:', flush=True)
            torch.manual_seed(seed)
            batches = calibration_batches(runner, cfg, args.calibration_images, seed,
                                          args.batch_size)
            pruner = PostTrainingPruner(target=dict(flops=flops),
                                        importance=dict(type=args.importance),
                                        ranking=args.ranking, reconstruction=None,
                                        bn_recalibration=False, seed=seed)
            pruner.attach(copy.deepcopy(model), batches[0][:1])
            pruner.calibrate_ranking(batches)
            plan = pruner.plan()
            rows, seconds = score_rows(pruner, plan.masks, batches, score, args, seed)
            if args.random_control:
                control = random_masks(plan.masks, seed)
                r, s = score_rows(pruner, control, batches, score, args, seed, 'random ')
                rows.update(r)
                seconds.update(s)
            stage = dict(flops=flops, seed=seed, dense=dense, rows=rows, seconds=seconds,
                         flops_ratio=pruner.cost(plan.masks) / pruner.selector.dense_cost,
                         kept={n: int(m.sum()) for n, m in plan.masks.items()},
                         calibration_images=sum(len(b) for b in batches),
                         importance=args.importance, ranking=args.ranking, ridge=args.ridge,
                         threads=torch.get_num_threads(), load=os.getloadavg()[0])
            with open(path + '.tmp', 'w') as f:
                json.dump(stage, f, indent=2)
            os.replace(path + '.tmp', path)
            results[(flops, seed)] = stage

    names = list(next(iter(results.values()))['rows'])
    lines = [f'dense top-1: {dense:.2f}; {args.importance} {args.ranking}, '
             f'{args.calibration_images} calibration images, seeds {args.seeds}, no training',
             '', '| row | ' + ' | '.join(f'-{f:.0%} FLOPs top-1 | loss' for f in args.flops)
             + ' |', '|---|' + '---|---|' * len(args.flops)]
    summary = {}
    for name in names:
        cells = []
        for flops in args.flops:
            values = [results[(flops, s)]['rows'].get(name) for s in args.seeds
                      if (flops, s) in results]
            losses = [None if v is None else dense - v for v in values]
            summary[f'{name} @ {flops}'] = dict(top1=mean_std(values), loss=mean_std(losses))
            cells += [summarise(values), summarise(losses)]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    table = '\n'.join(lines)
    print('\n' + table)
    with open(osp.join(work, 'table.md'), 'w') as f:
        f.write(table + '\n')
    with open(osp.join(work, 'results.json'), 'w') as f:
        json.dump(dict(dense=dense, summary=summary,
                       stages={f'{k[0]}_{k[1]}': v for k, v in results.items()}), f, indent=2)
    return summary


if __name__ == '__main__':
    sys.exit(0 if run_tool(main) is not None else 1)
