"""The benchmarks' one set of statistics: mean +- std over seeds (Nones left out), paired
differences per seed, and the cells each benchmark's table prints from them."""
import pytest

from mmrecprune.benchmarks.stats import (fmt, fmt_paired, mean_std, median_interval, paired,
                                         summarise)


def test_mean_std_leaves_out_missing_runs():
    mean, std, n = mean_std([80.0, None, 82.0])
    assert (mean, n) == (81.0, 2) and std == pytest.approx(2 ** 0.5)
    assert mean_std([70.0]) == (70.0, 0.0, 1)
    assert mean_std([None]) is None and mean_std([]) is None


@pytest.mark.parametrize('values, kwargs, text', [
    ([80.0, 82.0], {}, '81.00 +- 1.41'),
    ([80.0], {}, '80.00 (1 seed)'),
    ([], {}, '-'),
    ([80.0], dict(none='', one=''), '80.00'),  # the probe tables' cells
    ([], dict(none='', one=''), ''),
    ([0.5, 0.7], dict(digits=3), '0.600 +- 0.141'),
])
def test_summaries(values, kwargs, text):
    assert summarise(values, **kwargs) == text
    assert fmt(mean_std(values), **kwargs) == text


def test_paired_differences_count_the_seeds_that_win():
    p = paired({0: 80.0, 1: 82.0, 2: 81.0}, {0: 79.0, 1: 83.0, 2: None})
    assert p[0] == 0.0 and p[2:] == (2, 1) and p[1] == pytest.approx(2 ** 0.5)
    assert fmt_paired(p) == '+0.00 +- 1.41 (1/2)'
    assert paired({0: 1.0}, {1: 2.0}) is None and fmt_paired(None) == '-'


def test_plots_write_a_figure(tmp_path):
    from mmrecprune.benchmarks.plots import errorbars, pyplot, save
    fig, ax = pyplot().subplots()
    errorbars(ax, [(2, mean_std([1.0, 2.0])), (1, mean_std([3.0]))], label='a')
    save(fig, tmp_path / 'a.png')
    assert (tmp_path / 'a.png').stat().st_size > 0


def test_median_interval_brackets_the_median_and_narrows_with_more_blocks():
    import random
    rng = random.Random(1)
    few = [1.05 + rng.gauss(0, 0.02) for _ in range(8)]
    many = [1.05 + rng.gauss(0, 0.02) for _ in range(200)]
    for values in (few, many):
        low, high = median_interval(values)
        assert low <= sorted(values)[len(values) // 2] <= high
    assert (median_interval(many)[1] - median_interval(many)[0]
            < median_interval(few)[1] - median_interval(few)[0])
    assert median_interval(few) == median_interval(few)  # seeded: the same every run
    assert median_interval([1.0] * 5) == (1.0, 1.0)
    with pytest.raises(ValueError, match='no values'):
        median_interval([])
