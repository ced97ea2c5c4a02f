"""Is the slim model really faster? ResNet-50 slimmed to half its FLOPs, measured on the CPU.

MMDetection's ResNet-50 (random init: speed does not depend on the weights) at
``--input-size`` (224) is pruned to ``1 - --flops`` of its FLOPs by our engine
(``mmrecprune.methods.L1UniformPruner``: L1-norm filters, one ratio for every group,
channels inside the bottlenecks only so the stage outputs stay 256..2048, kept widths a multiple
of ``--round-to``) and physically slimmed. Then, in one run, the dense and slim backbones run in
interleaved rounds at batch 1 and 8 (``torch.inference_mode``, warm-up, median of
``--repeats``), and the measured speedup is set against the ideal one (dense / slim FLOPs).

Every model is timed three ways (``--modes``): **eager** (the ``nn.Module`` as it is),
**deployed** (BN folded into the convs, channels-last, TorchScript frozen and optimised for
inference, i.e. oneDNN with prepacked weights and conv + add + ReLU fused; see
``mmrecprune.analysis.deployed``) and **onnxruntime** (exported to ONNX with
``mmrecprune.analysis.export_onnx``, run by onnxruntime's CPU provider on the same number of
threads; needs the ``deploy`` extra), the same conversion for every model. Eager
mode pays BN, ReLU, the residual adds and the max-pool at full width whatever the pruning, so
part of its time cannot shrink; deployment removes most of that fixed cost.

``--round-to`` defaults to the CPU's SIMD width in floats (16 with AVX-512, else 8): oneDNN
computes channels in blocks of that size, so other widths are padded and pay for channels they
do not have.

If ``torch_pruning`` is importable, the same backbone is also pruned by Torch-Pruning's
``MetaPruner`` with L1 magnitude importance on the same channels (stem, ``conv3`` and
downsample convs ignored, i.e. the residual streams kept) and the same ``round_to``, its uniform
``pruning_ratio`` bisected until its FLOPs match ours; its slim model joins the latency rounds,
and the time each tool takes to prune once (trace, select, slim; our own ratio search included,
Torch-Pruning's ratio search excluded and reported separately; both warm: ours after one
untimed prune, Torch-Pruning's after its ratio search) is printed.

No config is read (the backbone is built here from ``--depth``), so there is no
``--cfg-options``; ``--work-dir`` receives the exported ONNX files and the results.

Example::

    python tools/benchmarks/bench_slim_speed.py --threads 1 --repeats 10
    python tools/benchmarks/bench_slim_speed.py --threads 1 --prune-only  # prune times only
"""
import argparse
import copy
import json
import os
import os.path as osp
from importlib.metadata import version  # torch-pruning 1.6 has no __version__

import torch
from mmdet.models.backbones import ResNet

from mmrecprune.analysis import (OnnxRuntimeModel, deployed, export_onnx,
                                 interleaved_latency)
from mmrecprune.analysis.slim_baselines import slim_l1_uniform, torch_pruning_at_flops
from mmrecprune.benchmarks.plots import pyplot, save
from mmrecprune.cli import check_work_dir, run_tool
from mmrecprune.sparsity import count_flops_params


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--depth', type=int, default=50)
    parser.add_argument('--input-size', type=int, default=224)
    parser.add_argument('--flops', type=float, default=0.5,
                        help='fraction of the FLOPs to remove (default 0.5)')
    parser.add_argument('--round-to', type=int, default=None,
                        help='kept widths a multiple of this (default: 16 with AVX-512, else 8)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--modes', nargs='+', choices=('eager', 'deployed', 'onnxruntime'),
                        default=['eager', 'deployed', 'onnxruntime'],
                        help='onnxruntime needs the deploy extra; skipped if missing')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--work-dir', default='work_dirs/bench_slim_speed',
                        help='where summary.json and speedup.png go')
    parser.add_argument('--no-torch-pruning', action='store_true',
                        help='skip the Torch-Pruning comparison')
    parser.add_argument('--prune-only', action='store_true',
                        help='stop after the prune times and FLOPs (no latency rounds, no plot)')
    return parser.parse_args()


def main():
    args = parse_args()
    check_work_dir(args.work_dir)  # written at the end: refused before the minutes of timing
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.round_to is None:
        args.round_to = 16 if 'AVX512' in torch.backends.cpu.get_cpu_capability() else 8
    shape = (1, 3, args.input_size, args.input_size)
    torch.manual_seed(0)
    dense = ResNet(depth=args.depth)
    dense.eval()
    dense_flops, dense_params = count_flops_params(dense, shape)
    print(f'ResNet-{args.depth} at {args.input_size}x{args.input_size}: dense '
          f'{dense_flops / 1e9:.3f} GFLOPs (MACs), {dense_params / 1e6:.2f} M params; target '
          f'-{args.flops:.0%} FLOPs, internal channels, round_to={args.round_to}; '
          f'{torch.get_num_threads()} CPU threads')

    # the first prune of the process pays one-off costs (first calls of kernels, fresh memory);
    # Torch-Pruning's timed prune follows its ratio search, so ours is timed warm too
    cold_time = slim_l1_uniform(copy.deepcopy(dense), shape, args.flops, args.round_to)
    ours = copy.deepcopy(dense)
    ours_time = slim_l1_uniform(ours, shape, args.flops, args.round_to)
    print(f'  mmrecprune prune: {ours_time:.3f} s (first in the process: {cold_time:.3f} s)')
    models = {'dense': dense, 'mmrecprune': ours}
    times = {'mmrecprune': ours_time}

    tp = None
    if not args.no_torch_pruning:
        try:
            import torch_pruning as tp
        except ImportError:
            print('torch_pruning is not installed: comparison skipped (.venv/bin/python -m pip '
                  'install torch-pruning==1.6.0 "setuptools>=77.0.3,<80")')
    if tp is not None:
        goal = count_flops_params(ours, shape)[0]
        found = torch_pruning_at_flops(tp, dense, shape, goal, args.round_to)
        best = (found['ratio'], found['flops'])
        models['torch_pruning'], times['torch_pruning'] = found['model'], found['seconds']
        print(f'Torch-Pruning {version("torch-pruning")}: pruning_ratio {best[0]:.4f} comes '
              f'closest to our FLOPs (ratio search {found["search_seconds"]:.1f} s, not '
              'counted below)')
        if abs(best[1] - goal) > 0.005 * dense_flops and not args.prune_only:
            # its uniform widths jump a whole round_to at once and it has no slack to give back,
            # so compare latency at equal FLOPs too: ours pruned to the FLOPs it reached
            matched = copy.deepcopy(dense)
            slim_l1_uniform(matched, shape, 1 - best[1] / dense_flops, args.round_to)
            models['mmrecprune@tp'] = matched
            print(f'  its FLOPs differ from ours by {abs(best[1] - goal) / dense_flops:.1%} of '
                  "the dense model's: 'mmrecprune@tp' is ours pruned to its FLOPs")

    counts = {}
    for name, model in models.items():
        model.eval()
        counts[name] = count_flops_params(model, shape)
        flops, params = counts[name]
        prune = f', pruned in {times[name]:.2f} s' if name in times else ''
        print(f'  {name:<14} {flops / 1e9:.3f} GFLOPs ({flops / dense_flops:.1%}), '
              f'{params / 1e6:.2f} M params{prune}')
    if 'torch_pruning' in times:
        print(f'  prune time mmrecprune / Torch-Pruning: '
              f'{times["mmrecprune"] / times["torch_pruning"]:.2f}')
    if args.prune_only:
        return
    rows = []
    modes = list(args.modes)
    if 'onnxruntime' in modes:
        try:
            import onnxruntime  # noqa: F401  # pyflakes: availability check
            import onnxscript  # noqa: F401
        except ImportError:
            print('onnxruntime / onnxscript not installed: onnxruntime column skipped '
                  '(pip install .[deploy])')
            modes.remove('onnxruntime')
    for mode in modes:
        for batch in args.batch_sizes:
            shape = (batch, 3, args.input_size, args.input_size)
            if mode == 'eager':
                timed = models
            elif mode == 'deployed':
                timed = {name: deployed(model, shape) for name, model in models.items()}
            else:  # the same models exported to ONNX, run by onnxruntime on the same threads
                timed = {}
                for name, model in models.items():
                    path = osp.join(args.work_dir, 'onnx', f'{name}_b{batch}.onnx')
                    export_onnx(model, shape, path)
                    timed[name] = OnnxRuntimeModel(path, threads=torch.get_num_threads())
            lat = interleaved_latency(timed, shape, args.repeats, args.warmup)
            print(f'  {mode}, batch {batch}: dense {1e3 * lat["dense"]:.1f} ms')
            for name in models:
                if name == 'dense':
                    continue
                speedup = lat['dense'] / lat[name]
                ideal = dense_flops / counts[name][0]
                print(f'    {name:<14} {1e3 * lat[name]:8.1f} ms  speedup {speedup:.2f}x  '
                      f'ideal {ideal:.2f}x  ratio {speedup / ideal:.2f}')
                rows.append(dict(mode=mode, batch=batch, model=name, ms=1e3 * lat[name],
                                 dense_ms=1e3 * lat['dense'], speedup=speedup, ideal=ideal))
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'summary.json'), 'w') as f:
        json.dump(dict(args=vars(args), threads=torch.get_num_threads(),
                       flops={n: c[0] for n, c in counts.items()},
                       params={n: c[1] for n, c in counts.items()}, prune_seconds=times,
                       latency=rows), f, indent=1)
    plot_speedups(rows, osp.join(args.work_dir, 'speedup.png'),
                  f'ResNet-{args.depth} {args.input_size}x{args.input_size}, -{args.flops:.0%} '
                  f'FLOPs, round_to={args.round_to}, {torch.get_num_threads()} CPU thread(s)')
    print(f'summary: {osp.join(args.work_dir, "summary.json")}, plot: '
          f'{osp.join(args.work_dir, "speedup.png")}')


def plot_speedups(rows, path, title):
    """Grouped bars: measured speedup per (mode, batch) and model, ideal (FLOPs) as a tick."""
    plt = pyplot()
    cases = list(dict.fromkeys((r['mode'], r['batch']) for r in rows))
    names = list(dict.fromkeys(r['model'] for r in rows))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(1.6 + 1.9 * len(cases), 3.8))
    for j, name in enumerate(names):
        for i, case in enumerate(cases):
            r = next(r for r in rows if (r['mode'], r['batch']) == case and r['model'] == name)
            x = i + (j - (len(names) - 1) / 2) * width
            ax.bar(x, r['speedup'], width, color=f'C{j}', label=name if i == 0 else None)
            ax.plot([x - width / 2, x + width / 2], [r['ideal']] * 2, 'k--', lw=1,
                    label='ideal (FLOPs)' if i == 0 and j == 0 else None)
            ax.text(x, r['speedup'], f'{r["speedup"] / r["ideal"]:.2f}', ha='center',
                    va='bottom', fontsize=7)
    ax.set_xticks(range(len(cases)), [f'{m}\nbatch {b}' for m, b in cases])
    ax.set_ylabel('speedup over dense (x)')
    ax.set_title(f'{title}; bar labels: measured / ideal', fontsize=9)
    ax.legend(fontsize=7, loc='lower right')
    save(fig, path)


if __name__ == '__main__':
    run_tool(main)
