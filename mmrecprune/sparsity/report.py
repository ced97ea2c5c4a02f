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


def _named_bar_axes(names, width_per_name):
    """A headless matplotlib figure with one axis whose x ticks are ``names``.

    Uses matplotlib's Agg canvas directly, so it works without a display and leaves pyplot's
    global backend alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, width_per_name * len(names) + 2.0), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    return fig, ax


def _save(fig, ax, path):
    ax.legend(loc='upper left')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_layer_sparsity(report, path, title=None):
    """Save a bar chart of the per-layer sparsity of ``report`` as an image (PNG by default).

    Args:
        report (dict): Output of :func:`sparsity_report`.
        path (str): File to write; the format follows its extension.
        title (str, optional): Chart title. Defaults to the overall sparsity.
    """
    names = list(report['layers'])
    values = [100.0 * report['layers'][n]['sparsity'] for n in names]
    fig, ax = _named_bar_axes(names, 0.25)
    ax.bar(range(len(names)), values, color='tab:blue')
    ax.axhline(100.0 * report['sparsity'], color='tab:red', linestyle='--', linewidth=1,
               label=f'overall {100.0 * report["sparsity"]:.1f} %')
    ax.set_ylim(0, 100)
    ax.set_ylabel('sparsity (%)')
    ax.set_title(title if title is not None else
                 f'Per-layer sparsity ({report["kept"]:,} of {report["total"]:,} kept)')
    _save(fig, ax, path)


def plot_kept_channels(widths, path, title=None):
    """Save a bar chart of kept vs dense channels per layer / channel group (structured pruning).

    Args:
        widths (dict[str, tuple[int, int]]): ``{name: (kept, dense)}``.
        path (str): File to write; the format follows its extension.
        title (str, optional): Chart title. Defaults to the kept total.
    """
    names = list(widths)
    kept = [widths[n][0] for n in names]
    dense = [widths[n][1] for n in names]
    fig, ax = _named_bar_axes(names, 0.3)
    ax.bar(range(len(names)), dense, color='0.85', label='dense')
    ax.bar(range(len(names)), kept, color='tab:blue', label='kept')
    ax.set_ylabel('channels')
    ax.set_title(title or f'Kept channels per layer ({sum(kept)} of {sum(dense)})')
    _save(fig, ax, path)


def mask_overlap(masks_a, masks_b):
    """How much two mask sets over the same parameters agree (e.g. two methods' tickets).

    Args:
        masks_a, masks_b (dict[str, BoolTensor]): Masks by parameter name; the names and shapes
            must match.

    Returns:
        dict: ``{'layers': {name: {'jaccard': float, 'shared': float}}, 'jaccard': float,
        'shared': float}``: Jaccard index of the kept sets, and ``shared``, the fraction of
        ``masks_a``'s kept weights that ``masks_b`` keeps too; overall values pool all layers.
    """
    if set(masks_a) != set(masks_b):
        diff = sorted(set(masks_a) ^ set(masks_b))
        raise ValueError(f'the mask sets cover different parameters: {diff[:5]}')
    layers, inter_all, union_all, kept_all = {}, 0, 0, 0
    for name, a in masks_a.items():
        b = masks_b[name]
        if a.shape != b.shape:
            raise ValueError(f'{name}: mask shapes differ ({tuple(a.shape)} vs {tuple(b.shape)})')
        inter, union, kept = int((a & b).sum()), int((a | b).sum()), int(a.sum())
        layers[name] = dict(jaccard=inter / union if union else 1.0,
                            shared=inter / kept if kept else 1.0)
        inter_all, union_all, kept_all = inter_all + inter, union_all + union, kept_all + kept
    return dict(layers=layers, jaccard=inter_all / union_all if union_all else 1.0,
                shared=inter_all / kept_all if kept_all else 1.0)
