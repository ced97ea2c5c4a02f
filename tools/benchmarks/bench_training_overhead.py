"""Training-step overhead of masked training and of RecPrune's decoder, as ratios in one run.

Compares, on the embedded default's classifier (ResNet-18 at width 16, 56x56 inputs):

- plain: ``ImageClassifier`` + ``OptimWrapper`` (SGD momentum)
- masked: the same + ``PruningOptimWrapper`` serving a 79 % sparse pruner + the
  ``LotteryTicketHook.after_train_iter`` call of every iteration
- recprune: ``ReconstructionClassifier`` (decoder frozen, lambda = 10) + masked training
- recprune_pooled: the same reconstructing the input average-pooled 2x (``rec_downsample=2``,
  the cheaper variant that configs/recprune/README.md scores against the paper's target)
- sphere: the plain classifier with hyperspherical convs, normalised once per forward for all
  convs together (``SharedUnitFilters``, as the ``OnTheFlyPruner`` installs it)
- onthefly: sphere + ``PruningOptimWrapper`` serving the ``OnTheFlyPruner``'s gap penalty
  (target sets re-selected every 10 steps) + ``OnTheFlyPruningHook.after_train_iter``

The variants are timed in interleaved blocks so machine noise hits them alike; the script prints
median step times and the ratios masked / plain, recprune / masked, recprune_pooled / masked,
sphere / plain and onthefly / plain against the issue-22 targets (each also as the median of its
block-by-block ratios, with that median's 95 % bootstrap interval: a target inside it is not
told apart from the ratio by the run), with the load average before
and after (``os.getloadavg``): on a machine shared with other jobs, 2 threads each wait at every
kernel's barrier for a core, so ``--threads 1`` measures the ratios more faithfully there.
``--by-operator`` adds, after the timing, the operators the hyperspherical convs and the
on-the-fly pruner add to a plain step (torch.profiler self time per step); ``--torch-compile``
times the normalisation and the gap penalty against ``torch.compile`` of the same formulas (the
fused kernels a compiler makes, where a C++ compiler is installed). ``--compiled-ops``
adds three variants, sphere and onthefly with the normalisation and the gap penalty computed by
the package's compiled kernels (``OnTheFlyPruner(compiled_ops=True)``, :mod:`mmrecprune.ops`),
and masked with the masks enforced by them (``IterativeMagnitudePruner(compiled_ops=True)``),
their ratios to plain, what the compiled masked pruner adds alone, and what the penalty adds
to a step (compiled, it is computed in the
normalisation's node, so the difference of the step medians with and without it), and stops
with an error if the kernels' unit filters, gradients or penalty differ from eager PyTorch's by
more than 1e-4 relative.
``--cfg-options`` apply to
each of the six configs before its model is built (e.g.
``model.backbone.base_channels=64``); the pruners and hooks are the script's own.
"""
import argparse
import math
import os
import statistics
import time
from types import SimpleNamespace

import torch
from mmengine.config import Config, DictAction
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmengine.structures import BaseDataElement

import mmrecprune  # noqa: F401
from mmrecprune.benchmarks.op_profile import added_op_times, op_times
from mmrecprune.benchmarks.stats import median_interval
from mmrecprune.cli import merge_cfg_options, run_tool
from mmrecprune.hooks import LotteryTicketHook, OnTheFlyPruningHook
from mmrecprune.ops import OpsUnavailable, eager_agreement, mask_functions, onthefly_functions
from mmrecprune.optim import PruningOptimWrapper
from mmrecprune.registry import MODELS
from mmrecprune.sparsity.gap_penalty import gap_penalty, target_thresholds
from mmrecprune.sparsity.hyperspherical import (NORM_EPS, SharedUnitFilters,
                                                hyperspherical_convs, unit_filter_list)


ONTHEFLY = 'configs/onthefly/onthefly_r18-w16_1xb128-6e_fashionmnist.py'


def build(config, cfg_options=None):
    cfg = merge_cfg_options(Config.fromfile(config), cfg_options, config)
    with DefaultScope.overwrite_default_scope('mmrecprune'):
        return MODELS.build(cfg.model)


def make_batch(batch_size, size):
    inputs = [torch.randint(0, 255, (3, size, size), dtype=torch.uint8) for _ in range(batch_size)]
    samples = [BaseDataElement(gt_label=torch.tensor([i % 10])) for i in range(batch_size)]
    return dict(inputs=inputs, data_samples=samples)


def variant(model, masked, rounds=7, compiled_ops=False):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    if not masked:
        return SimpleNamespace(model=model, wrapper=OptimWrapper(opt), hook=None)
    wrapper = PruningOptimWrapper(opt)
    hook = LotteryTicketHook(rounds=rounds, epochs_per_round=1,
                             pruner=dict(type='IterativeMagnitudePruner', rewind_to='none',
                                         compiled_ops=compiled_ops))
    pruner = hook.pruner
    pruner.attach(model)
    for _ in range(rounds):
        pruner.step()
    wrapper.attach(pruner)
    return SimpleNamespace(model=model, wrapper=wrapper, hook=hook)


def on_the_fly_variant(model, penalty, compiled_ops=False):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    if not penalty:
        SharedUnitFilters(model, onthefly_functions() if compiled_ops else None)
        return SimpleNamespace(model=model, wrapper=OptimWrapper(opt), hook=None)
    wrapper = PruningOptimWrapper(opt)
    hook = OnTheFlyPruningHook(pruner=dict(type='OnTheFlyPruner', sparsity=0.5, penalty=1.0,
                                           compiled_ops=compiled_ops))
    hook.pruner.attach(model)
    wrapper.attach(hook.pruner)
    return SimpleNamespace(model=model, wrapper=wrapper, hook=hook)


def step_time(v, batch, runner):
    start = time.perf_counter()
    v.model.train_step(batch, v.wrapper)
    if v.hook is not None:
        v.hook.after_train_iter(runner, 0)
    return time.perf_counter() - start


def _median_time(fn, prepare=None, repeats=20):
    """Median time of ``fn`` over ``repeats`` calls (one more first, untimed), each after an
    untimed ``prepare``."""
    times = []
    for _ in range(repeats + 1):
        if prepare is not None:
            prepare()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def masked_work_time(v, repeats=20):
    """What the masked pruner adds to a step, alone: its work around the optimizer step plus
    the hook (steadier than a ratio of whole steps on a shared machine)."""
    pruner = v.hook.pruner
    for p in v.model.parameters():
        p.grad = torch.randn_like(p)

    def masked_work():
        pruner.before_optimizer_step()
        pruner.after_optimizer_step()
        v.hook.after_train_iter(SimpleNamespace(iter=10**6), 0)

    out = _median_time(masked_work, repeats=repeats)
    v.wrapper.optimizer.zero_grad(set_to_none=True)
    return out


def penalty_time(v, batch, repeats=20):
    """The on-the-fly gap penalty's forward and backward, alone, on the unit filters a forward
    of the model made (as in training; the backward includes the normalisation's, which the
    convs' gradients share in a training step), computed as ``v``'s pruner computes it (eager
    or compiled)."""
    model, pruner = v.model, v.hook.pruner
    data = model.data_preprocessor(batch, True)
    out = _median_time(
        lambda: pruner.regularize(torch.zeros((), requires_grad=True)).backward(),
        lambda: model(**data, mode='loss'),  # not timed: the shared unit filters
        repeats)
    v.wrapper.optimizer.zero_grad(set_to_none=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--size', type=int, default=56)
    parser.add_argument('--blocks', type=int, default=10)
    parser.add_argument('--steps-per-block', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of every config timed, xxx=yyy format')
    parser.add_argument('--torch-compile', action='store_true',
                        help='also time torch.compile of the normalisation and the gap penalty '
                        '(needs a C++ compiler; about 20 s to compile)')
    parser.add_argument('--compiled-ops', action='store_true',
                        help='also time sphere, on-the-fly and masked with the compiled kernels '
                        'of mmrecprune.ops (AVX2, CPU; built on first use: needs g++ and ninja)')
    parser.add_argument('--by-operator', action='store_true',
                        help='after the timing, print the operators that the hyperspherical '
                        'convs and the on-the-fly pruner add to a plain step (torch.profiler)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    opts = args.cfg_options
    variants = {
        'plain': variant(build('configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py', opts),
                         False),
        'masked': variant(build('configs/imp/imp_r18-w16_7r-1e_fashionmnist.py', opts), True),
        'recprune': variant(build('configs/recprune/recprune_r18-w16_7r-1e_fashionmnist.py',
                                  opts), True),
        'recprune_pooled': variant(
            build('configs/recprune/recprune-pooled_r18-w16_7r-1e_fashionmnist.py', opts), True),
        'sphere': on_the_fly_variant(build(ONTHEFLY, opts), False),
        'onthefly': on_the_fly_variant(build(ONTHEFLY, opts), True),
    }
    compiled = False
    if args.compiled_ops:
        try:
            onthefly_functions()
            mask_functions()
        except OpsUnavailable as error:
            print(f'compiled kernels not run: {error}')
        else:
            compiled = True
            for name, penalty in (('sphere_compiled', False), ('onthefly_compiled', True)):
                variants[name] = on_the_fly_variant(build(ONTHEFLY, opts), penalty, True)
            variants['masked_compiled'] = variant(
                build('configs/imp/imp_r18-w16_7r-1e_fashionmnist.py', opts), True,
                compiled_ops=True)
    batch = make_batch(args.batch_size, args.size)
    runner = SimpleNamespace(iter=10**6)
    times = {k: [] for k in variants}
    load_before = os.getloadavg()
    for v in variants.values():  # warm-up
        v.model.train()
        for _ in range(2):
            step_time(v, batch, runner)
    for _ in range(args.blocks):
        for name, v in variants.items():
            times[name] += [step_time(v, batch, runner) for _ in range(args.steps_per_block)]
    load_after = os.getloadavg()
    med = {k: statistics.median(t) for k, t in times.items()}
    print(f'threads={torch.get_num_threads()} batch={args.batch_size} '
          f'input={args.size}x{args.size}')
    print(f'load average (1, 5, 15 min): before {", ".join(f"{x:.2f}" for x in load_before)}; '
          f'after {", ".join(f"{x:.2f}" for x in load_after)}')
    for k, t in med.items():
        print(f'{k:>9}: median step {1000 * t:.1f} ms over {len(times[k])} steps')
    rows = [('masked training (PruningOptimWrapper + LotteryTicketHook) / plain', 'masked', 'plain',
             1.02),
            ('RecPrune decoder step / masked IMP step', 'recprune', 'masked', 1.8),
            ('RecPrune, target pooled 2x (rec_downsample=2) / masked IMP step',
             'recprune_pooled', 'masked', 1.8),
            ('hyperspherical convs / plain', 'sphere', 'plain', None),
            ('on-the-fly (hyperspherical + gap penalty + hook) / plain', 'onthefly', 'plain',
             1.05)]
    if compiled:
        rows += [('masked training, compiled kernels (compiled_ops=True) / plain',
                  'masked_compiled', 'plain', 1.02),
                 ('hyperspherical convs, compiled kernels / plain', 'sphere_compiled', 'plain',
                  None),
                 ('on-the-fly, compiled kernels (compiled_ops=True) / plain', 'onthefly_compiled',
                  'plain', 1.05)]
    masked_ms, penalty_ms = masked_work_time(variants['masked']), penalty_time(
        variants['onthefly'], batch)
    print(f'measured alone: the masked pruner + hook add {1000 * masked_ms:.2f} ms per step '
          f'({masked_ms / med["plain"]:.2%} of a plain step); the gap penalty (forward + '
          f'backward) {1000 * penalty_ms:.1f} ms ({penalty_ms / med["plain"]:.1%})')
    if compiled:
        masked_compiled_ms = masked_work_time(variants['masked_compiled'])
        print(f'measured alone: the masked pruner + hook with the compiled kernels add '
              f'{1000 * masked_compiled_ms:.2f} ms per step '
              f'({masked_compiled_ms / med["plain"]:.2%} of a plain step)')
        # compiled, the penalty is computed inside the normalisation's node (its forward in the
        # model's forward), so it has no time alone: what it adds is the difference of the
        # interleaved steps with and without it, given for eager beside it
        added = {k: med[f'onthefly{k}'] - med[f'sphere{k}'] for k in ('', '_compiled')}
        print(f'the gap penalty + hook as the difference of step medians (on-the-fly - '
              f'hyperspherical convs): eager {1000 * added[""]:.2f} ms, compiled kernels '
              f'{1000 * added["_compiled"]:.2f} ms ({added["_compiled"] / med["plain"]:.1%} '
              'of a plain step)')
    per = args.steps_per_block
    for text, a, b, target in rows:
        ratio = med[a] / med[b]
        # the same ratio block by block (the two variants' steps a few seconds apart), then the
        # median over blocks: steadier than the ratio of medians when the load drifts
        blocks = [statistics.median(times[a][i:i + per]) / statistics.median(times[b][i:i + per])
                  for i in range(0, len(times[a]), per)]
        paired, (low, high) = statistics.median(blocks), median_interval(blocks)
        verdict = '' if target is None else (
            f'  (target <= {target}: {"met" if ratio <= target else "NOT met"}'
            f'{"; inside the interval" if low <= target <= high else ""})')
        print(f'{text}: {ratio:.3f}{verdict}; block-paired median {paired:.3f} (95 % bootstrap '
              f'interval over {len(blocks)} blocks {low:.3f}-{high:.3f})')
    if compiled:
        pruner = variants['onthefly_compiled'].hook.pruner
        agreement = eager_agreement(onthefly_functions(), list(pruner.params.values()),
                                    pruner.thresholds, pruner.margin)
        print('compiled kernels against eager PyTorch, on the trained weights (largest relative '
              'difference): ' + ', '.join(f'{k.replace("_", " ")} {v:.1e}'
                                          for k, v in agreement.items()))
        if max(agreement.values()) > 1e-4:
            raise SystemExit('the compiled kernels do not compute what eager PyTorch does')
    if args.by_operator:
        print_profile(variants, batch, runner)
    if args.torch_compile:
        print_compiled(variants['onthefly'])


def _reference_units(weights):
    """The unit filters in plain differentiable PyTorch (what ``_UnitFilterList`` computes)."""
    return [w / torch.linalg.vector_norm(w.flatten(1), dim=1).clamp_min(NORM_EPS).view(
        -1, *([1] * (w.dim() - 1))) for w in weights]


def _reference_penalty(units, borders, margin: float):
    """The gap penalty in plain differentiable PyTorch (what ``_GapPenalty`` computes)."""
    terms = []
    for v, border in zip(units, borders):
        u = v.abs() * math.sqrt(v[0].numel())
        kept = u > border
        n_kept = kept.sum()
        n_target = (v.numel() - n_kept).clamp_min(1)
        terms.append(torch.where(kept, 0.0, u).sum() / n_target
                     + torch.where(kept, torch.relu(margin - u), 0.0).sum()
                     / n_kept.clamp_min(1))
    return torch.stack(terms).mean()


def print_compiled(v, repeats=20):
    """The normalisation and the gap penalty (forward + backward, caches flushed before each
    run as in a step) as the package computes them, against ``torch.compile`` of the same
    formulas in plain PyTorch: would a compiler's fused kernels close the gap?"""
    pruner = v.hook.pruner
    convs = list(hyperspherical_convs(v.model).values())
    weights = [c.weight for c in convs]
    borders = target_thresholds(weights, pruner.sparsity)
    margin = pruner.margin
    flush = torch.empty(1 << 23)

    def eager(penalty=True):
        units = unit_filter_list(weights)
        grads = [torch.ones_like(u) for u in units]
        if not penalty:
            return torch.autograd.backward(units, grads)
        loss = gap_penalty(weights, borders, margin, units=units)
        torch.autograd.backward([loss, *units], [None, *grads])

    def timed(fn):
        times = []
        for _ in range(repeats + 1):
            flush.fill_(1.0)
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])

    start = time.perf_counter()
    units_fn = torch.compile(_reference_units, dynamic=False)
    penalty_fn = torch.compile(_reference_penalty, dynamic=False)
    border_list = list(borders.unbind())

    def compiled(penalty=True):
        units = units_fn(weights)
        grads = [torch.ones_like(u) for u in units]
        if not penalty:
            return torch.autograd.backward(units, grads)
        loss = penalty_fn(units, border_list, margin)
        torch.autograd.backward([loss, *units], [None, *grads])

    try:
        compiled()
    except Exception as error:  # inductor needs a C++ compiler; report, keep the timings above
        first_line = str(error).splitlines()[0][:200]
        print(f'\ntorch.compile failed ({type(error).__name__}: {first_line}); it needs a '
              'working C++ compiler (e.g. apt-get install g++)')
        return
    compile_s = time.perf_counter() - start
    with torch.no_grad():
        ours = gap_penalty(weights, borders, margin).item()
        theirs = penalty_fn(units_fn(weights), border_list, margin).item()

    print(f'\ntorch.compile (inductor) of the same formulas, first call {compile_s:.1f} s; '
          f'penalty ours {ours:.6f}, compiled {theirs:.6f}; forward + backward, median of '
          f'{repeats}, caches flushed:')
    print(f'  normalisation: ours {1000 * timed(lambda: eager(False)):.2f} ms, compiled '
          f'{1000 * timed(lambda: compiled(False)):.2f} ms')
    print(f'  normalisation + penalty: ours {1000 * timed(eager):.2f} ms, compiled '
          f'{1000 * timed(compiled):.2f} ms')
    for w in weights:
        w.grad = None


def print_profile(variants, batch, runner, top=12, steps=5):
    """The operators that the hyperspherical convs and the on-the-fly pruner add to a plain step
    (torch.profiler self time per step, ``steps`` each): which kernels make the overhead. With
    the compiled variants, also their nodes' own time per step (steadier than a ratio of whole
    steps, whose other operators move by a few per cent between runs)."""
    names = [n for n in ('plain', 'sphere', 'onthefly', 'sphere_compiled', 'onthefly_compiled')
             if n in variants]
    times = {name: op_times(lambda v=variants[name]: step_time(v, batch, runner), steps)
             for name in names}
    total = {name: sum(t.values()) for name, t in times.items()}
    print(f'\nprofile (torch.profiler self time per step, {steps} steps each, profiler overhead '
          'included): ' + ', '.join(f'{n} {1000 * total[n]:.1f} ms' for n in names))
    for name in names[1:]:
        added = added_op_times(times[name], times['plain'], top)
        print(f'operators {name} adds to plain, ms per step (all: '
              f'{1000 * (total[name] - total["plain"]):+.2f}):')
        print('  ' + ', '.join(f'{op} {1000 * t:+.2f}' for op, t in added))
        if name.endswith('_compiled'):
            own = sum(t for op, t in times[name].items() if op.startswith('Compiled'))
            print(f'  the compiled nodes (forward + backward) alone: {1000 * own:.2f} ms per '
                  f'step, {own / total["plain"]:.1%} of a plain step')

if __name__ == '__main__':
    run_tool(main)
