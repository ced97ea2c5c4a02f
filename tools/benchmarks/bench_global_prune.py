"""Time one global magnitude pruning step: mmrecprune's engine vs ``torch.nn.utils.prune``.

Builds MMDetection's ``ResNet`` (depth 50 by default), takes every conv weight except the stem
(about 23.5M values), and prunes ``--ratio`` of them globally by magnitude with

* ours: ``init_masks`` + ``global_magnitude_masks`` + ``apply_masks``;
* torch: ``prune.global_unstructured(..., pruning_method=prune.L1Unstructured, amount=ratio)``
  (which also builds its masks and applies them through ``weight_orig * weight_mask``).

Each side runs ``--repeats`` times on the same weights (restored between runs, untimed); the
median is reported, next to the floor measured in the same run: the time to read every prunable
weight once (one ``sum`` per weight, nothing written), which no prune can beat since it must
read every magnitude at least once, and ours step by step (each of the three alone, in floors).
It also prints what the three calls cannot avoid, in floors: two new sets of masks (one from
``init_masks``, one returned by ``global_magnitude_masks``), the selection's read of every
weight and ``apply_masks``' in-place rewrite of every weight, each timed as one PyTorch pass.
With ``--compiled-ops`` it also times ours with the package's compiled kernels
(:func:`mmrecprune.ops.mask_functions`, opt-in as ``IterativeMagnitudePruner(compiled_ops=True)``:
the selection's pass and the zeroing in C++), beside ours and the floor; its masks and pruned
weights must equal ours, bit for bit.
With ``--compiled-prototype`` it also times the C++ prototype of issue 22's option (a)
(``tools/benchmarks/prototypes/global_prune_avx2.cpp``, built on first use): the same sample
and exact selection, its two passes (count and band; mask and zero) in AVX2 loops; its masks
and pruned weights must equal ours. Printed with the load average (``os.getloadavg``): on a
shared machine the ratios, measured side by side, say more than the times. The two masks must
agree except at entries whose magnitude equals the threshold (ties, which either side may break
differently). No config is read (the backbone is
built here from ``--depth``), so there is no ``--cfg-options``.

Example::

    python tools/benchmarks/bench_global_prune.py --depth 50 --repeats 5
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
from mmdet.models.backbones import ResNet
from torch.nn.utils import prune

from mmrecprune.benchmarks.compiled_prototypes import (build_prototype, prototype_bracket,
                                                       prototype_prune, prototype_prune_one_pass)
from mmrecprune.cli import run_tool
from mmrecprune.ops import OpsUnavailable, mask_functions
from mmrecprune.sparsity import (apply_masks, global_magnitude_masks, global_magnitude_threshold,
                                 init_masks, prunable_parameters)
from mmrecprune.sparsity.magnitude_selection import MagnitudeSelection


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--depth', type=int, default=50, help='ResNet depth (default 50)')
    parser.add_argument('--ratio', type=float, default=0.2,
                        help='fraction of the weights to prune (default 0.2)')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per side (default 5)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads for both sides (default: torch default)')
    parser.add_argument('--device', default='cpu', help='device of the weights (default cpu)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--compiled-ops', action='store_true',
                        help="also time ours with the package's compiled kernels (AVX2, CPU; "
                        'built on first use: needs g++ and ninja)')
    parser.add_argument('--compiled-prototype', action='store_true',
                        help='also time the C++ prototype (AVX2, CPU; needs g++ and ninja)')
    return parser.parse_args()


def _sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def _timed(fn, restore, repeats, device):
    times, out = [], None
    for _ in range(repeats):
        restore()
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, out


# the chunk of MagnitudeSelection's CPU pass (2**17 entries: it and its temporaries stay in L2)
CHUNK = 1 << 17


def _timed_numpy_passes(params, repeats):
    """What the least an eager mask computation does costs, chunk by chunk as
    :class:`~mmrecprune.sparsity.magnitude_selection.MagnitudeSelection` runs it: ``|w|`` alone,
    and ``|w| >= t`` into a bool mask with its count (medians over ``repeats``)."""
    views = [p.detach().reshape(-1).numpy() for p in params.values()]
    mags, mask = np.empty(CHUNK, np.float32), np.empty(CHUNK, bool)

    def passes(compare):
        for view in views:
            for start in range(0, view.size, CHUNK):
                part = view[start:start + CHUNK]
                a = np.abs(part, out=mags[:part.size])
                if compare:
                    np.count_nonzero(np.greater_equal(a, 0.01, out=mask[:part.size]))

    return (_timed(lambda: passes(False), lambda: None, repeats, 'cpu')[0],
            _timed(lambda: passes(True), lambda: None, repeats, 'cpu')[0])


def _timed_api_lower_bound(params, repeats, device):
    """What the three calls cannot avoid, timed alone (medians over ``repeats``): making a new
    all-True bool mask per weight (``init_masks`` returns one set, ``global_magnitude_masks``
    another; allocation and first write), and one in-place read and write of every weight
    (``apply_masks`` must zero pruned entries spread over nearly every cache line: with 20 %
    pruned at random, 97 % of 16-float lines hold one), each as PyTorch's own single pass (a
    fill, an in-place multiply by 1). With the floor's one read of every weight (the
    selection's), their sum is about the least any implementation of these calls can take."""
    with torch.no_grad():
        masks = _timed(lambda: [torch.ones(p.shape, dtype=torch.bool, device=p.device)
                                for p in params.values()], lambda: None, repeats, device)[0]
        rewrite = _timed(lambda: [p.mul_(1.0) for p in params.values()], lambda: None,
                         repeats, device)[0]
    return masks, rewrite


_VERDICTS = {True: 'equal to ours', False: 'DIFFER from ours',
             None: 'not compared (the sample missed the threshold; the prototype has no rerun)'}


def _built_for_cpu(what, device, build, errors):
    """``build()``, or None with the reason printed: ``what`` is CPU code, or cannot be built
    here (``errors``)."""
    if torch.device(device).type != 'cpu':
        print(f'{what} not run: it is CPU code (--device cpu)')
        return None
    try:
        return build()
    except errors as error:
        print(f'{what} not run: {error}')
        return None


def _time_compiled(params, original, ours, floor, restore, args):
    """Ours with the compiled kernels, timed beside ours and the floor (before and after
    them), and whether its masks and pruned weights equal ours; None (with the reason printed)
    where they cannot be built or do not apply."""
    functions = _built_for_cpu('compiled kernels', args.device, mask_functions, OpsUnavailable)
    if functions is None:
        return None

    def compiled():
        masks = global_magnitude_masks(params, init_masks(params), args.ratio,
                                       functions=functions)
        apply_masks(params, masks, functions=functions)
        return masks

    compiled()  # warm-up
    floors = [_timed(floor, lambda: None, args.repeats, args.device)[0]]
    t_ours, _, masks_ours = _timed(ours, restore, args.repeats, args.device)
    t_compiled, _, masks = _timed(compiled, restore, args.repeats, args.device)
    same = _same(masks, masks_ours, params, original)
    all_kept = init_masks(params)
    t_select = _timed(lambda: global_magnitude_masks(params, all_kept, args.ratio,
                                                     functions=functions),
                      restore, args.repeats, args.device)[0]
    t_apply = _timed(lambda: apply_masks(params, masks_ours, functions=functions), restore,
                     args.repeats, args.device)[0]
    floors.append(_timed(floor, lambda: None, args.repeats, args.device)[0])
    return dict(floor=statistics.median(floors), ours=t_ours, compiled=t_compiled, same=same,
                select=t_select, apply=t_apply)


def _time_prototype(params, original, ours, floor, restore, args):
    """``prototype_prune`` timed beside ours and the floor (before and after it), and whether
    its masks and pruned weights equal ours; None (with the reason printed) where it cannot
    be built or run."""
    kernels = _built_for_cpu('compiled prototype', args.device,
                             lambda: build_prototype('global_prune_avx2.cpp'), RuntimeError)
    if kernels is None:
        return None
    floors = [_timed(floor, lambda: None, args.repeats, args.device)[0]]
    t_ours, _, masks_ours = _timed(ours, restore, args.repeats, args.device)
    t_proto, _, masks = _timed(lambda: prototype_prune(kernels, params, args.ratio),
                               restore, args.repeats, args.device)
    # None: the sample's bracket missed the threshold (which the package handles by a second
    # pass and the prototype does not), so there is nothing to compare
    same = _same(masks, masks_ours, params, original)
    t_one, _, masks = _timed(lambda: prototype_prune_one_pass(kernels, params, args.ratio),
                             restore, args.repeats, args.device)
    same_one = _same(masks, masks_ours, params, original)
    # the two passes alone, at the bracket and threshold of this prune (unpruned weights)
    restore()
    _, lo, hi = prototype_bracket(MagnitudeSelection(params, init_masks(params)), args.ratio)
    threshold = global_magnitude_threshold(params, init_masks(params), args.ratio)
    flat = [p.detach().view(-1) for p in params.values()]
    outs = [torch.empty_like(w, dtype=torch.bool) for w in flat]
    t_count = _timed(lambda: [kernels.count_band(w, lo, hi) for w in flat],
                     lambda: None, args.repeats, args.device)[0]
    t_write = _timed(lambda: [kernels.prune_at(w, m, threshold) for w, m in zip(flat, outs)],
                     restore, args.repeats, args.device)[0]
    floors.append(_timed(floor, lambda: None, args.repeats, args.device)[0])
    return dict(floor=statistics.median(floors), ours=t_ours, prototype=t_proto, same=same,
                count=t_count, write=t_write, one_pass=t_one, same_one=same_one)


def _same(masks, masks_ours, params, original):
    """Whether a prototype's masks and pruned weights equal ours (None: it returned none)."""
    return None if masks is None else all(
        torch.equal(masks[n], masks_ours[n]) and torch.equal(p, original[n] * masks_ours[n])
        for n, p in params.items())


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = ResNet(depth=args.depth).to(args.device)
    params = prunable_parameters(model)  # all convs but the stem (conv1)
    modules = dict(model.named_modules())
    targets = [(modules[name.rsplit('.', 1)[0]], 'weight') for name in params]
    original = {name: p.detach().clone() for name, p in params.items()}
    numel = sum(p.numel() for p in params.values())
    print(f'ResNet-{args.depth}: {len(params)} prunable conv weights (stem excluded), '
          f'{numel:,} prunable values; pruning {args.ratio:.0%} globally; '
          f'{torch.get_num_threads()} CPU threads; device {args.device}')

    @torch.no_grad()
    def restore():
        for module, _ in targets:
            if prune.is_pruned(module):  # undo torch's re-parametrisation (untimed)
                prune.remove(module, 'weight')
        for name, p in params.items():
            p.copy_(original[name])

    def ours():
        masks = global_magnitude_masks(params, init_masks(params), args.ratio)
        apply_masks(params, masks)
        return masks

    def theirs():
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured,
                                  amount=args.ratio)
        return {name: module.weight_mask for name, (module, _) in zip(params, targets)}

    @torch.no_grad()
    def floor():
        return sum(p.sum() for p in params.values())

    ours()  # warm-up (allocator, kernels)
    floor()
    load_before = os.getloadavg()
    t_floor, times_floor, _ = _timed(floor, lambda: None, args.repeats, args.device)
    t_ours, times_ours, masks_ours = _timed(ours, restore, args.repeats, args.device)
    t_torch, times_torch, masks_torch = _timed(theirs, restore, args.repeats, args.device)
    t_floor_after, times_floor_after, _ = _timed(floor, lambda: None, args.repeats, args.device)
    # where ours spends its time: each of its three steps alone
    all_kept = init_masks(params)
    t_init = _timed(lambda: init_masks(params), lambda: None, args.repeats, args.device)[0]
    t_select = _timed(lambda: global_magnitude_masks(params, all_kept, args.ratio),
                      lambda: None, args.repeats, args.device)[0]
    t_apply = _timed(lambda: apply_masks(params, masks_ours), restore, args.repeats,
                     args.device)[0]
    t_floor = statistics.median(times_floor + times_floor_after)
    compiled = (_time_compiled(params, original, ours, floor, restore, args)
                if args.compiled_ops else None)
    prototype = (_time_prototype(params, original, ours, floor, restore, args)
                 if args.compiled_prototype else None)
    t_new_masks, t_rewrite = _timed_api_lower_bound(params, args.repeats, args.device)
    t_abs, t_compare = (_timed_numpy_passes(params, args.repeats)
                        if torch.device(args.device).type == 'cpu' else (None, None))
    load_after = os.getloadavg()
    masks_torch = {name: mask.bool() for name, mask in masks_torch.items()}
    restore()

    threshold = global_magnitude_threshold(params, init_masks(params), args.ratio)
    n_diff = n_tied = 0
    diff_off_threshold = 0
    for name, p in params.items():
        mags = p.detach().abs()
        diff = masks_ours[name] != masks_torch[name]
        n_diff += int(diff.sum())
        n_tied += int((mags == threshold).sum())
        diff_off_threshold += int((diff & (mags != threshold)).sum())
    pruned_ours = sum(int((~m).sum()) for m in masks_ours.values())
    pruned_torch = sum(int((~m).sum()) for m in masks_torch.values())

    print(f'load average (1, 5, 15 min): before {", ".join(f"{x:.2f}" for x in load_before)}'
          f'; after {", ".join(f"{x:.2f}" for x in load_after)}')
    print(f'floor: median {1e3 * t_floor:8.1f} ms  (read every prunable weight once; before and '
          f'after the two sides: {", ".join(f"{1e3 * t:.1f}" for t in times_floor)} | '
          f'{", ".join(f"{1e3 * t:.1f}" for t in times_floor_after)})')
    print(f'ours : median {1e3 * t_ours:8.1f} ms  '
          f'(runs: {", ".join(f"{1e3 * t:.1f}" for t in times_ours)})')
    print(f'ours by step (medians, each alone): init_masks {1e3 * t_init:.1f} ms, '
          f'global_magnitude_masks {1e3 * t_select:.1f} ms, apply_masks {1e3 * t_apply:.1f} ms '
          f'({t_init / t_floor:.1f} + {t_select / t_floor:.1f} + {t_apply / t_floor:.1f} floors)')
    bound = (2 * t_new_masks + t_rewrite) / t_floor + 1.0
    print(f'least these three calls can take: two new sets of masks {1e3 * t_new_masks:.1f} ms '
          f'each, one read of every weight (the floor) and one in-place rewrite of every weight '
          f'{1e3 * t_rewrite:.1f} ms = {bound:.2f} floors; the <= 3 target leaves '
          f'{3.0 - bound:.2f} floors for the sample, the counts, the exact selection and the '
          'Python around them')
    if t_abs is not None:  # the CPU's eager path (NumPy views)
        print(f'eager lower bounds: NumPy |w| in L2-sized chunks {1e3 * t_abs:.1f} ms, |w| >= t '
              f'into a bool mask and its count {1e3 * t_compare:.1f} ms ({t_abs / t_floor:.1f} '
              f'and {t_compare / t_floor:.1f} floors; any mask must at least be written once)')
    if compiled is not None:
        floors = {key: compiled[key] / compiled['floor'] for key in ('compiled', 'ours')}
        print(f'ours, compiled kernels (compiled_ops=True): median '
              f'{1e3 * compiled["compiled"]:.1f} ms = {floors["compiled"]:.2f} floors (target '
              f'<= 3: {"met" if floors["compiled"] <= 3 else "NOT met"}); ours beside it '
              f'{1e3 * compiled["ours"]:.1f} ms = {floors["ours"]:.2f} floors (floor around them '
              f'{1e3 * compiled["floor"]:.1f} ms); masks and pruned weights '
              f'{_VERDICTS[compiled["same"]]}')
        print(f'  its steps alone: global_magnitude_masks {1e3 * compiled["select"]:.1f} ms, '
              f'apply_masks {1e3 * compiled["apply"]:.1f} ms '
              f'({compiled["select"] / compiled["floor"]:.2f} and '
              f'{compiled["apply"] / compiled["floor"]:.2f} floors)')
    if prototype is not None:
        print(f'compiled prototype (AVX2): median {1e3 * prototype["prototype"]:.1f} ms = '
              f'{prototype["prototype"] / prototype["floor"]:.2f} floors; ours beside it '
              f'{1e3 * prototype["ours"]:.1f} ms = {prototype["ours"] / prototype["floor"]:.2f} '
              f'floors (floor around them {1e3 * prototype["floor"]:.1f} ms); masks and pruned '
              f'weights {_VERDICTS[prototype["same"]]}')
        count, write = (prototype[key] / prototype['floor'] for key in ('count', 'write'))
        print(f'  its passes alone: count and band {1e3 * prototype["count"]:.1f} ms, mask and '
              f'zero {1e3 * prototype["write"]:.1f} ms ({count:.2f} and {write:.2f} floors; the '
              "rest is the package's Python around them: new masks, the sample, the band's "
              'selection)')
        print(f'  in one pass (prune below the bracket, keep and collect the band, then the band '
              f'by index): median {1e3 * prototype["one_pass"]:.1f} ms = '
              f'{prototype["one_pass"] / prototype["floor"]:.2f} floors; masks and pruned weights '
              f'{_VERDICTS[prototype["same_one"]]}')
    print(f'torch: median {1e3 * t_torch:8.1f} ms  '
          f'(runs: {", ".join(f"{1e3 * t:.1f}" for t in times_torch)})')
    print(f'ours / floor: {t_ours / t_floor:.2f}  (target <= 3: '
          f'{"met" if t_ours / t_floor <= 3 else "NOT met"})')
    print(f'torch / ours: {t_torch / t_ours:.1f}x  (target >= 25x: '
          f'{"met" if t_torch / t_ours >= 25 else "NOT met"})')
    print(f'pruned: ours {pruned_ours:,}, torch {pruned_torch:,}; threshold |w| = '
          f'{threshold:.6g} ({n_tied} weights at exactly this magnitude)')
    print(f'masks differ at {n_diff} entries, {diff_off_threshold} of them off the threshold '
          f'magnitude -> {"agree up to ties" if diff_off_threshold == 0 else "DISAGREE"}')
    if (diff_off_threshold or pruned_ours != pruned_torch
            or (prototype is not None and prototype['same'] is False)
            or (compiled is not None and not compiled['same'])):
        raise SystemExit(1)


if __name__ == '__main__':
    sys.exit(run_tool(main))
