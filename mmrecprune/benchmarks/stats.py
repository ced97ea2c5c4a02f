"""The statistics of the benchmarks' tables: mean +- std over seeds and paired differences
(per seed) against a baseline, and how they are printed; the bootstrap interval of a median
that the timing benchmarks give their block-paired ratios."""
import random
import statistics


def mean_std(values):
    """``(mean, std, n)`` of ``values`` without the Nones (sample std; 0.0 for one value), or
    None when nothing is left."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0,
            len(values))


def fmt(ms, digits=2, none='-', one=' (1 seed)'):
    """A :func:`mean_std` as ``mean +- std``; one value as ``mean`` + ``one``, None as
    ``none``."""
    if ms is None:
        return none
    mean, std, n = ms
    return f'{mean:.{digits}f} +- {std:.{digits}f}' if n > 1 else f'{mean:.{digits}f}{one}'


def summarise(values, digits=2, none='-', one=' (1 seed)'):
    """``fmt(mean_std(values))``: the cell of a table over seeds."""
    return fmt(mean_std(values), digits, none, one)


def paired(values, baseline):
    """Per-seed differences ``values[s] - baseline[s]`` (``{seed: value}`` each; seeds where
    either is missing or None are left out): ``(mean, std, n, wins)`` with ``wins`` the seeds
    where ``values`` is higher, or None without a pair."""
    diffs = [values[s] - baseline[s] for s in values
             if s in baseline and values[s] is not None and baseline[s] is not None]
    if not diffs:
        return None
    return (statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            len(diffs), sum(d > 0 for d in diffs))


def fmt_paired(p):
    """A :func:`paired` as ``+mean +- std (wins/n)``; None as '-'."""
    if p is None:
        return '-'
    mean, std, n, wins = p
    return f'{mean:+.2f} +- {std:.2f} ({wins}/{n})'


def median_interval(values, level=0.95, resamples=2000, seed=0):
    """``(low, high)``: the percentile bootstrap interval of the median of ``values`` at
    ``level`` (``resamples`` resamples with replacement, drawn from ``seed``, so a benchmark
    prints the same interval for the same values). How far a median of block-paired timing
    ratios would move if the run were repeated: a target inside the interval is not told
    apart from the measured ratio by the run."""
    values = list(values)
    if not values:
        raise ValueError('median_interval of no values')
    if not 0 < level < 1:
        raise ValueError(f'level must be in (0, 1), got {level!r}')
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values)))
                     for _ in range(resamples))
    tail = (1 - level) / 2
    return (medians[int(tail * resamples)],
            medians[min(resamples - 1, int((1 - tail) * resamples))])
