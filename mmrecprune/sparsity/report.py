"""Sparsity of a mask set: numbers per layer and overall, and a per-layer bar chart."""


def sparsity_report(masks):
    """Count kept and pruned weights.

    Args:
        masks (dict[str, BoolTensor]): Masks by parameter name.

    Returns:
        dict: ``{'layers': {name: {'kept': int, 'total': int, 'sparsity': float}},
        'kept': int, 'total': int, 'sparsity': float}``; sparsity is the pruned fraction
        (``1 - kept / total``, ``0.0`` for an empty set).
    """
    layers = {}
    for name, mask in masks.items():
        total = mask.numel()
        kept = int(mask.sum())
        layers[name] = dict(kept=kept, total=total,
                            sparsity=1.0 - kept / total if total else 0.0)
    kept = sum(layer['kept'] for layer in layers.values())
    total = sum(layer['total'] for layer in layers.values())
    return dict(layers=layers, kept=kept, total=total,
                sparsity=1.0 - kept / total if total else 0.0)


def plot_layer_sparsity(report, path, title=None):
    """Save a bar chart of the per-layer sparsity of ``report`` as an image (PNG by default).

    Uses matplotlib's Agg canvas directly, so it works headless and leaves pyplot's global
    backend alone.

    Args:
        report (dict): Output of :func:`sparsity_report`.
        path (str): File to write; the format follows its extension.
        title (str, optional): Chart title. Defaults to the overall sparsity.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(report['layers'])
    values = [100.0 * report['layers'][n]['sparsity'] for n in names]
    fig = Figure(figsize=(max(6.0, 0.25 * len(names) + 2.0), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(names)), values, color='tab:blue')
    ax.axhline(100.0 * report['sparsity'], color='tab:red', linestyle='--', linewidth=1,
               label=f'overall {100.0 * report["sparsity"]:.1f} %')
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_ylim(0, 100)
    ax.set_ylabel('sparsity (%)')
    ax.set_title(title if title is not None else
                 f'Per-layer sparsity ({report["kept"]:,} of {report["total"]:,} kept)')
    ax.legend(loc='upper left')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
