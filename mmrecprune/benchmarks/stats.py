"""The statistics of the benchmarks' tables: mean +- std over seeds and paired differences
(per seed) against a baseline, and how they are printed."""
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
