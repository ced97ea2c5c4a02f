"""Slim ResNets for speed comparisons: ours (L1-uniform, internal channels) and Torch-Pruning's
at the same FLOPs, shared by ``tools/benchmarks/bench_slim_speed.py`` (CPU) and the GPU check.

Ours: ``mmrecprune.methods.L1UniformPruner`` (L1-norm filters, one ratio for every group,
channels inside the residual blocks only so the stage outputs keep their widths, kept widths a
multiple of ``round_to``), physically slimmed. Torch-Pruning's ``MetaPruner`` with L1
magnitude importance on the same channels (stem, ``conv3`` and downsample convs ignored) and the
same ``round_to``, its uniform ``pruning_ratio`` bisected until its FLOPs match a goal.
"""
import copy
import time

import torch

from mmrecprune.sparsity import count_flops_params, slim_model


def slim_l1_uniform(model, input_shape, fraction, round_to):
    """Prune ``fraction`` of ``model``'s FLOPs with our L1-uniform pruner and slim it in place;
    return the seconds it took (trace, select, slim)."""
    from mmrecprune.methods import L1UniformPruner
    start = time.perf_counter()
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    pruner = L1UniformPruner(target=dict(flops=fraction), num_steps=1, round_to=round_to,
                             scope='')
    pruner.attach(model, x)
    pruner.step()
    slim_model(model, pruner.groups, pruner.masks)
    return time.perf_counter() - start


def internal_channel_ignored_layers(model):
    """Every conv but the bottlenecks' conv1 / conv2 (and the basic blocks' conv1): our
    'internal channels only', as Torch-Pruning's ``ignored_layers``."""
    keep = {f'{n}.conv{i}' for n, m in model.named_modules()
            if type(m).__name__ in ('Bottleneck', 'BasicBlock') for i in (1, 2)}
    keep = {n for n in keep if not n.endswith('conv2') or
            type(model.get_submodule(n.rsplit('.', 1)[0])).__name__ == 'Bottleneck'}
    return [m for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d) and n not in keep]


def torch_pruning_slim(tp, dense, input_shape, ratio, round_to):
    """A copy of ``dense`` pruned by Torch-Pruning (module ``tp``) at uniform ``ratio``, and the
    seconds it took."""
    model = copy.deepcopy(dense)
    x = torch.randn(*input_shape)
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=ratio,
        ignored_layers=internal_channel_ignored_layers(model),
        round_to=round_to if round_to > 1 else None)
    pruner.step()
    return model, time.perf_counter() - start


def torch_pruning_at_flops(tp, dense, input_shape, goal_flops, round_to, iterations=10,
                           tolerance=0.002):
    """Bisect Torch-Pruning's uniform ratio until its FLOPs come within ``tolerance`` of the
    dense model's FLOPs of ``goal_flops``.

    Returns:
        dict: ``model`` (pruned at the best ratio), ``ratio``, ``flops``, ``seconds`` (one
        prune at that ratio) and ``search_seconds`` (the bisection).
    """
    dense_flops = count_flops_params(dense, input_shape)[0]
    lo, hi, best = 0.0, 0.95, None
    search_start = time.perf_counter()
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        model, _ = torch_pruning_slim(tp, dense, input_shape, mid, round_to)
        flops = count_flops_params(model, input_shape)[0]
        if best is None or abs(flops - goal_flops) < abs(best[1] - goal_flops):
            best = (mid, flops)
        if flops > goal_flops:
            lo = mid
        else:
            hi = mid
        if abs(flops - goal_flops) <= tolerance * dense_flops:
            break
    search = time.perf_counter() - search_start
    model, seconds = torch_pruning_slim(tp, dense, input_shape, best[0], round_to)
    return dict(model=model, ratio=best[0], flops=best[1], seconds=seconds,
                search_seconds=search)
