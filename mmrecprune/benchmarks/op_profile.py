"""Where a training step's time goes, by operator: the evidence behind a ratio.

A step-time ratio says how much slower or faster one variant is; :func:`op_times` says which
operators make the difference. It runs a step function under ``torch.profiler`` (CPU
activities, no shapes, no stacks: the profiler's own cost stays small next to a step) and
returns each operator's *self* time per step, so nested operators are not counted twice and
the rows add up to the profiled step. :func:`group_op_times` folds them into named groups
(convolution, batch norm, pooling, ...) by name patterns, first match wins;
:func:`added_op_times` ranks the operators one variant adds to another.

The profiler adds a few microseconds per operator, so its per-step total is somewhat above a
plain timing; compare variants profiled the same way, not a profiled step with a timed one.
"""
from fnmatch import fnmatchcase

from torch.profiler import ProfilerActivity, profile

#: Operator groups of a CNN training step on a CPU, as ``(group, name patterns)``; the first
#: group whose pattern matches an operator's name takes it, the rest is ``'other'``.
CNN_STEP_GROUPS = (
    ('conv backward', ('aten::convolution_backward', '*ConvolutionBackward*')),
    ('conv forward', ('aten::*convolution*', 'aten::conv2d', 'aten::_convolution')),
    ('batch norm', ('aten::*batch_norm*', '*BatchNormBackward*')),
    ('max-pool', ('aten::max_pool2d*', '*MaxPool2DWithIndicesBackward*')),
    ('relu', ('aten::relu*', 'aten::threshold_backward', '*ReluBackward*',
              'aten::clamp_min*')),
    # the SGD update's own kernels, and the in-place gradient accumulation of autograd
    ('in-place arithmetic (optimizer)', ('Optimizer.*', 'aten::_foreach_*', 'aten::add_',
                                         'aten::mul_', 'aten::addcmul_', 'aten::lerp_')),
)


def op_times(step, steps=5, warmup=1):
    """Self CPU time per operator per call of ``step`` (seconds), from ``torch.profiler``.

    Args:
        step (callable): One training step (no arguments); called ``warmup`` times unprofiled,
            then ``steps`` times under the profiler.
        steps (int): Profiled calls (the times are their mean).
        warmup (int): Calls before profiling (allocator, first-call set-up).

    Returns:
        dict[str, float]: Operator name -> self time per step, largest first.
    """
    if steps < 1:
        raise ValueError(f'steps must be >= 1, got {steps}')
    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    times = {event.key: event.self_cpu_time_total * 1e-6 / steps
             for event in prof.key_averages()}
    return dict(sorted(times.items(), key=lambda kv: -kv[1]))


def _group_of(name, groups):
    for group, patterns in groups:
        if any(fnmatchcase(name, p) for p in patterns):
            return group
    return 'other'


def group_op_times(times, groups=CNN_STEP_GROUPS):
    """Fold :func:`op_times` into groups: ``{group: seconds}`` in the order of ``groups``,
    then ``'other'`` (always present, 0.0 when nothing fell in it)."""
    out = {group: 0.0 for group, _ in groups}
    out['other'] = 0.0
    for name, seconds in times.items():
        out[_group_of(name, groups)] += seconds
    return out


def added_op_times(times, baseline, top=10):
    """The operators whose self time per step grows most from ``baseline`` to ``times`` (both
    from :func:`op_times`): ``[(name, added seconds)]``, largest first, at most ``top``."""
    names = set(times) | set(baseline)
    added = [(n, times.get(n, 0.0) - baseline.get(n, 0.0)) for n in names]
    return sorted(added, key=lambda kv: -kv[1])[:top]
