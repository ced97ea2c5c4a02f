"""The leaderboard's figure: top-1 re-trained and linear probe against the level, per kind."""
from mmrecprune.benchmarks.plots import errorbars, pyplot, save

from .grid import STRUCTURED, UNSTRUCTURED
from .tables import TITLES


def plot(rows, path):
    """Four panels (unstructured / structured x top-1 / probe), one curve per method, the dense
    reference as a dotted line; written to ``path``."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    dense = next((r for r in rows if r['kind'] == 'dense'), None)
    for col, kind, xlabel in ((0, 'unstructured', 'sparsity (%)'),
                              (1, 'structured', 'backbone FLOPs removed (%)')):
        for row_i, metric in enumerate(('top1', 'probe')):
            ax = axes[row_i][col]
            methods = sorted({r['method'] for r in rows if r['kind'] == kind},
                             key=(UNSTRUCTURED + STRUCTURED).index)
            for i, method in enumerate(methods):
                pts = [(r['level'], r[metric]) for r in rows
                       if r['method'] == method and r['kind'] == kind and r[metric]]
                if not pts:
                    continue
                errorbars(ax, pts, ls='--' if method.startswith('random') else '-',
                          color=plt.cm.tab10(i), label=method)
            if dense and dense[metric]:
                ax.axhline(dense[metric][0], color='k', ls=':', label='dense')
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f'{TITLES[metric]} (%)')
            ax.set_title(f'{kind}: {TITLES[metric]}')
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle('Leaderboard on the embedded default (mean +- std over seeds)')
    save(fig, path)

