"""Step time of structured pruning runs with and without slimming during training.

For each (model, method) pair the script trains two copies of one model side by side on the same
synthetic batches: ``soft`` (soft masks, dense shapes until the end: the default) and ``slim``
(``slim_during_training=True``: cut channels leave the model as soon as they cannot come back).
The schedule is the shipped config's pruner (target, number of steps; ``--steps`` overrides it),
with one dense segment first: the cuts run before iterations ``I, 2I, ..., K*I`` (``I`` =
``--iters`` per segment) and the run ends after ``(K+1)*I`` iterations. Each cut is what
``StructuredPruningHook`` does at a step: plan and commit, clear the changed channels' optimizer
state, and, in the slim copy, :meth:`~mmrecprune.methods.StructuredPruner.slim` with the
optimizer. The two copies alternate iteration by iteration, so machine noise hits both alike.

``--channels-last`` trains both copies with channels-last weights, the layout oneDNN computes
convolutions in (contiguous weights pay a reorder per convolution, a fixed cost that does not
shrink with the channels). Printed per pair: the load average before and after, the step times
across the run (median of each block of ``--block`` iterations), the median step time per
segment against the kept FLOPs (and as a fraction of the dense step), and the wall time of the
whole run (steps plus cuts) of each copy; with ``--by-operator``, after the last cut, the self
time per step of each operator group (convolution forward / backward, batch norm, max-pool,
...) in both copies, which shows what shrinks with the channels and what stays. A PNG plots,
for every pair, the slim step over the interleaved soft step against the kept FLOPs.

Pairs: ``r18`` = the embedded default's ResNet-18-w16 classifier (configs/psap and configs/l1,
56x56, batch 64); ``r50`` = the ImageNet ResNet-50 classifier of
configs/psap/psap_r50_8xb32-30e_imagenet.py at a small batch and input (``--r50-batch``,
``--r50-size``) so a CPU finishes in minutes.

Example::

    python tools/benchmarks/bench_slim_training.py --models r18 r50 --methods l1 psap \\
        --out configs/psap/bench_slim_training.png
"""
import argparse
import copy
import os
import statistics
import time

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import DefaultScope
from mmengine.structures import BaseDataElement

import mmrecprune  # noqa: F401
from mmrecprune.benchmarks.op_profile import group_op_times, op_times
from mmrecprune.cli import check_output_path, merge_cfg_options, run_tool
from mmrecprune.optim import PruningOptimWrapper
from mmrecprune.registry import MODELS, PRUNERS
from mmrecprune.sparsity import example_input

CONFIGS = {
    ('r18', 'l1'): 'configs/l1/l1-uniform_r18-w16_1xb128-4e_fashionmnist.py',
    ('r18', 'psap'): 'configs/psap/psap_r18-w16_1xb128-4e_fashionmnist.py',
    ('r50', 'l1'): 'configs/l1/l1-uniform_r50_8xb32-30e_imagenet.py',
    ('r50', 'psap'): 'configs/psap/psap_r50_8xb32-30e_imagenet.py',
}


def load():
    return ' '.join(f'{v:.2f}' for v in os.getloadavg())


def make_batch(batch_size, size, num_classes, seed):
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 255, (3, size, size), dtype=torch.uint8, generator=g)
              for _ in range(batch_size)]
    labels = torch.randint(0, num_classes, (batch_size, ), generator=g)
    samples = [BaseDataElement(gt_label=labels[i:i + 1]) for i in range(batch_size)]
    return dict(inputs=inputs, data_samples=samples)


def build_pair(config, size, steps, channels_last=False, cfg_options=None):
    """Two identical (model, wrapper, pruner) triples: soft and slim."""
    cfg = merge_cfg_options(Config.fromfile(config), cfg_options, config)
    pruner_cfg = copy.deepcopy(cfg.custom_hooks[0]['pruner'])
    if steps:
        pruner_cfg['num_steps'] = steps
    pair = {}
    for name in ('soft', 'slim'):
        torch.manual_seed(0)
        with DefaultScope.overwrite_default_scope('mmrecprune'):
            model = MODELS.build(copy.deepcopy(cfg.model))
        model.train()
        if channels_last:
            model.to(memory_format=torch.channels_last)
        pruner = PRUNERS.build(dict(pruner_cfg, slim_during_training=name == 'slim'))
        pruner.attach(model, example_input((1, 3, size, size)))
        wrapper = PruningOptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9,
                                                      weight_decay=1e-4))
        wrapper.attach(pruner)
        pair[name] = (model, wrapper, pruner)
    return pair, cfg.model.get('num_classes', 1000)


def cut(model, wrapper, pruner):
    """What StructuredPruningHook does at a step (one process)."""
    plan = pruner.plan()
    changed = pruner.commit(plan)
    wrapper.reset_state(pruner.optimizer_slices(changed))
    pruner.slim([wrapper.optimizer])


def run_pair(key, args):
    model_name, method = key
    size = args.size if model_name == 'r18' else args.r50_size
    batch_size = args.batch_size if model_name == 'r18' else args.r50_batch
    iters = args.iters if model_name == 'r18' else args.r50_iters
    pair, num_classes = build_pair(CONFIGS[key], size, args.steps, args.channels_last,
                                   args.cfg_options)
    steps = pair['soft'][2].num_steps
    batches = [make_batch(batch_size, size, num_classes, seed) for seed in range(4)]
    print(f'\n== {model_name} / {method} ({CONFIGS[key]}): {steps} cuts, {iters} iterations '
          f'per segment, batch {batch_size}, input {size}x{size}, '
          f'threads {torch.get_num_threads()}, '
          f'{"channels-last" if args.channels_last else "contiguous"} weights, '
          f'load average before: {load()}')
    for model, wrapper, _ in pair.values():  # warm-up
        model.train_step(batches[0], wrapper)
    times = {name: [] for name in pair}
    cut_times = {name: 0.0 for name in pair}
    kept = []
    for segment in range(steps + 1):
        if segment:
            for name, triple in pair.items():
                start = time.perf_counter()
                cut(*triple)
                cut_times[name] += time.perf_counter() - start
        pruner = pair['soft'][2]
        kept.append(pruner.cost(metric='flops') / pruner.cost_model.dense('flops'))
        for i in range(iters):
            order = pair.items() if i % 2 == 0 else reversed(list(pair.items()))
            for name, (model, wrapper, _) in order:
                start = time.perf_counter()
                model.train_step(batches[i % len(batches)], wrapper)
                times[name].append(time.perf_counter() - start)
    print(f'load average after: {load()}')
    for name in pair:
        blocks = [statistics.median(times[name][i:i + args.block])
                  for i in range(0, len(times[name]), args.block)]
        print(f'  {name} step times across the run (ms, median of {args.block}): '
              + ' '.join(f'{1000 * b:.0f}' for b in blocks))
    seg = {name: [statistics.median(times[name][s * iters:(s + 1) * iters])
                  for s in range(steps + 1)] for name in pair}
    dense = seg['soft'][0]
    print('  segment | kept FLOPs | soft ms | slim ms | slim / dense step | slim / soft')
    for s in range(steps + 1):
        print(f'  {s:>7} | {kept[s]:>10.3f} | {1000 * seg["soft"][s]:>7.1f} | '
              f'{1000 * seg["slim"][s]:>7.1f} | {seg["slim"][s] / dense:>17.3f} | '
              f'{seg["slim"][s] / seg["soft"][s]:>11.3f}')
    wall = {name: sum(times[name]) + cut_times[name] for name in pair}
    print(f'  whole run (steps + cuts): soft {wall["soft"]:.1f} s, slim {wall["slim"]:.1f} s, '
          f'slim / soft {wall["slim"] / wall["soft"]:.3f} (cuts: soft {cut_times["soft"]:.2f} s, '
          f'slim {cut_times["slim"]:.2f} s)')
    # the soft copy computes at dense cost in every segment, interleaved with the slim one, so
    # slim / soft of the last segment is the slim step against a dense step taken at the same
    # moment (slim / dense step compares segments minutes apart, which load changes can skew)
    final = seg['slim'][-1] / seg['soft'][-1]
    if args.by_operator:
        print_profile(pair, batches[0], kept[-1])
    print(f'  at -{1 - kept[-1]:.0%} FLOPs: slim step / interleaved dense-cost (soft) step = '
          f'{final:.3f} (target <= 0.65: {"met" if final <= 0.65 else "NOT met"}); '
          f'/ dense segment {seg["slim"][-1] / dense:.3f}')
    return dict(kept=kept, soft=seg['soft'], slim=seg['slim'], dense=dense)


def print_profile(pair, batch, kept, steps=5):
    """Self time per step by operator group, soft against slim, after the last cut: which parts
    of a step shrink with the channels and which stay."""
    times = {}
    for name, (model, wrapper, _) in pair.items():
        times[name] = group_op_times(op_times(lambda: model.train_step(batch, wrapper), steps))
    total = {name: sum(t.values()) for name, t in times.items()}
    print(f'  profile after the last cut (kept FLOPs {kept:.3f}; torch.profiler self time per '
          f'step, {steps} steps each, profiler overhead included)')
    print('  operator group                  | soft ms | slim ms | slim / soft | share of slim')
    for group in times['soft']:
        soft, slim = times['soft'][group], times['slim'][group]
        print(f'  {group:<31} | {1000 * soft:>7.1f} | {1000 * slim:>7.1f} | '
              f'{slim / soft if soft else float("nan"):>11.3f} | {slim / total["slim"]:>12.1%}')
    print(f'  {"total":<31} | {1000 * total["soft"]:>7.1f} | {1000 * total["slim"]:>7.1f} | '
          f'{total["slim"] / total["soft"]:>11.3f} |')


def plot(results, path):
    """Slim step / the interleaved soft (dense-cost) step, per segment, against kept FLOPs."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for (model_name, method), r in results.items():
        ax.plot(r['kept'], [a / b for a, b in zip(r['slim'], r['soft'])], marker='o',
                label=f'{model_name} {method}')
    ax.plot([0.5, 1.0], [0.5, 1.0], ':', color='grey', label='proportional to FLOPs')
    ax.axhline(1.0, color='black', lw=0.6, ls='--', label='soft masks (dense cost)')
    ax.plot([0.5], [0.65], 'r*', ms=10, label='target at -50 % FLOPs (<= 0.65)')
    ax.set_xlabel('kept backbone FLOPs (fraction of dense)')
    ax.set_ylabel('slim step / interleaved soft-mask step')
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'\nplot: {path}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', default=['r18', 'r50'], choices=['r18', 'r50'])
    parser.add_argument('--methods', nargs='+', default=['l1', 'psap'], choices=['l1', 'psap'])
    parser.add_argument('--steps', type=int, default=None,
                        help='pruning steps (default: the config pruner\'s num_steps)')
    parser.add_argument('--iters', type=int, default=12, help='iterations per segment (r18)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--size', type=int, default=56)
    parser.add_argument('--r50-iters', type=int, default=4)
    parser.add_argument('--r50-batch', type=int, default=8)
    parser.add_argument('--r50-size', type=int, default=112)
    parser.add_argument('--block', type=int, default=4, help='steps per printed median')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--channels-last', action='store_true',
                        help='train both copies with channels-last weights (oneDNN\'s layout)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of every config before its model and pruner '
                        'are built (xxx=yyy, as tools/train.py)')
    parser.add_argument('--by-operator', action='store_true',
                        help='after the last cut, print where a soft and a slim step spend '
                        'their time, by operator group (torch.profiler)')
    parser.add_argument('--out', default='bench_slim_training.png', help='the plot (.png)')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    args = parser.parse_args()
    check_output_path(args.out, args.force, '--out')
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for model_name in args.models:
        for method in args.methods:
            results[(model_name, method)] = run_pair((model_name, method), args)
    plot(results, args.out)


if __name__ == '__main__':
    run_tool(main)
