"""What the benchmarks' plots share: matplotlib without a display, mean +- std curves over
seeds, and one way to write a figure."""


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def errorbars(ax, points, **kwargs):
    """A mean +- std curve on ``ax``: ``points`` are ``(x, (mean, std, ...))`` (see
    :func:`mmrecprune.benchmarks.stats.mean_std`), drawn in ``x`` order with markers and
    capped error bars; ``kwargs`` go to ``ax.errorbar`` (colour, label, line style)."""
    points = sorted(points, key=lambda p: p[0])
    ax.errorbar([p[0] for p in points], [p[1][0] for p in points],
                yerr=[p[1][1] for p in points], marker='o', capsize=3, **kwargs)


def save(fig, path, dpi=120):
    """Lay ``fig`` out, write it to ``path`` and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
