"""Is the slim model really faster? ResNet-50 slimmed to half its FLOPs, measured on the CPU.

MMDetection's ResNet-50 (random init: speed does not depend on the weights) at
``--input-size`` (224) is pruned to ``1 - --flops`` of its FLOPs by our engine
(``mmrecprune.methods.psap.L1UniformPruner``: L1-norm filters, one ratio for every group,
channels inside the bottlenecks only so the stage outputs stay 256..2048, kept widths rounded up
to ``--round-to``) and physically slimmed. Then, in one run, the dense and slim backbones run in
interleaved rounds at batch 1 and 8 (``torch.inference_mode``, warm-up, median of
``--repeats``), and the measured speedup is set against the ideal one (dense / slim FLOPs).

If ``torch_pruning`` is importable, the same backbone is also pruned by Torch-Pruning's
``MetaPruner`` with L1 magnitude importance on the same channels (stem, ``conv3`` and
downsample convs ignored, i.e. the residual streams kept), its uniform ``pruning_ratio``
bisected until its FLOPs match ours; its slim model joins the latency rounds, and the time each
tool takes to prune once (trace, select, slim; our own ratio search included, Torch-Pruning's
ratio search excluded and reported separately) is printed.

Example::

    nice -n 10 python tools/benchmarks/bench_slim_speed.py --threads 1 --repeats 5
"""
import argparse
import copy
import os.path as osp
import sys
import time

import torch
from mmdet.models.backbones import ResNet

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', 'analysis_tools'))
from analyze_ticket import interleaved_latency  # noqa: E402

from mmrecprune.methods.psap import L1UniformPruner  # noqa: E402
from mmrecprune.sparsity import count_flops_params, slim_model  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--depth', type=int, default=50)
    parser.add_argument('--input-size', type=int, default=224)
    parser.add_argument('--flops', type=float, default=0.5,
                        help='fraction of the FLOPs to remove (default 0.5)')
    parser.add_argument('--round-to', type=int, default=1,
                        help='kept widths a multiple of this (e.g. 8; default 1)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--no-torch-pruning', action='store_true',
                        help='skip the Torch-Pruning comparison')
    return parser.parse_args()


def prune_ours(model, shape, fraction, round_to):
    start = time.perf_counter()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    pruner = L1UniformPruner(model, x, dict(flops=fraction), 1, round_to=round_to)
    pruner.step()
    slim_model(model, pruner.groups, pruner.masks)
    return time.perf_counter() - start


def ignored_layers(model):
    """Everything but the bottlenecks' conv1 / conv2: our 'internal channels only'."""
    keep = {f'{n}.conv{i}' for n, m in model.named_modules()
            if type(m).__name__ in ('Bottleneck', 'BasicBlock') for i in (1, 2)}
    keep = {n for n in keep if not n.endswith('conv2') or
            type(model.get_submodule(n.rsplit('.', 1)[0])).__name__ == 'Bottleneck'}
    return [m for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d) and n not in keep]


def prune_torch_pruning(tp, dense, shape, ratio, round_to):
    model = copy.deepcopy(dense)
    x = torch.randn(*shape)
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=ratio,
        ignored_layers=ignored_layers(model), round_to=round_to if round_to > 1 else None)
    pruner.step()
    return model, time.perf_counter() - start


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (1, 3, args.input_size, args.input_size)
    torch.manual_seed(0)
    dense = ResNet(depth=args.depth)
    dense.eval()
    dense_flops, dense_params = count_flops_params(dense, shape)
    print(f'ResNet-{args.depth} at {args.input_size}x{args.input_size}: dense '
          f'{dense_flops / 1e9:.3f} GFLOPs (MACs), {dense_params / 1e6:.2f} M params; target '
          f'-{args.flops:.0%} FLOPs, internal channels, round_to={args.round_to}; '
          f'{torch.get_num_threads()} CPU threads')

    ours = copy.deepcopy(dense)
    ours_time = prune_ours(ours, shape, args.flops, args.round_to)
    models = {'dense': dense, 'mmrecprune': ours}
    times = {'mmrecprune': ours_time}

    tp = None
    if not args.no_torch_pruning:
        try:
            import torch_pruning as tp
        except ImportError:
            print('torch_pruning is not installed: comparison skipped')
    if tp is not None:
        goal = count_flops_params(ours, shape)[0]
        lo, hi, search_start = 0.0, 0.95, time.perf_counter()
        best = None
        for _ in range(10):  # bisect the uniform ratio until the FLOPs match ours
            mid = 0.5 * (lo + hi)
            model, _ = prune_torch_pruning(tp, dense, shape, mid, args.round_to)
            flops = count_flops_params(model, shape)[0]
            if best is None or abs(flops - goal) < abs(best[1] - goal):
                best = (mid, flops)
            if flops > goal:
                lo = mid
            else:
                hi = mid
            if abs(flops - goal) <= 0.002 * dense_flops:
                break
        search = time.perf_counter() - search_start
        model, times['torch_pruning'] = prune_torch_pruning(tp, dense, shape, best[0],
                                                            args.round_to)
        models['torch_pruning'] = model
        print(f'Torch-Pruning {tp.__version__}: pruning_ratio {best[0]:.4f} matches the FLOPs '
              f'(ratio search {search:.1f} s, not counted below)')

    counts = {}
    for name, model in models.items():
        model.eval()
        counts[name] = count_flops_params(model, shape)
        flops, params = counts[name]
        prune = f', pruned in {times[name]:.2f} s' if name in times else ''
        print(f'  {name:<14} {flops / 1e9:.3f} GFLOPs ({flops / dense_flops:.1%}), '
              f'{params / 1e6:.2f} M params{prune}')
    for batch in args.batch_sizes:
        lat = interleaved_latency(models, (batch, 3, args.input_size, args.input_size),
                                  args.repeats, args.warmup)
        print(f'  batch {batch}: dense {1e3 * lat["dense"]:.1f} ms')
        for name in models:
            if name == 'dense':
                continue
            speedup = lat['dense'] / lat[name]
            ideal = dense_flops / counts[name][0]
            print(f'    {name:<14} {1e3 * lat[name]:8.1f} ms  speedup {speedup:.2f}x  '
                  f'ideal {ideal:.2f}x  ratio {speedup / ideal:.2f}')


if __name__ == '__main__':
    main()
