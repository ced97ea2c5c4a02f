"""The GPU check's PNG."""


def plot(report, path):
    """One PNG: slim speed-ups, the 2:4 backbone's, and the 2:4 per-layer ones."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sections = report['sections']
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    panels = (
        ('slim: speed-up over dense', sections.get('slim', {}).get('figures', {})
         .get('latency', []), 'dense'),
        ('2:4 backbone: speed-up over dense (mask)', sections.get('nm', {}).get('figures', {})
         .get('backbone', []), 'dense (mask)'))
    for ax, (title, rows, reference) in zip(axes[:2], panels):
        rows = [r for r in rows if r['model'] != reference]
        if not rows:
            ax.text(0.5, 0.5, 'not measured', ha='center', va='center')
            ax.set_title(title, fontsize=9)
            continue
        cases = list(dict.fromkeys((r['mode'], r['batch']) for r in rows))
        names = list(dict.fromkeys(r['model'] for r in rows))
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            for i, case in enumerate(cases):
                row = next((r for r in rows if (r['mode'], r['batch']) == case
                            and r['model'] == name), None)
                if row is None:
                    continue
                x = i + (j - (len(names) - 1) / 2) * width
                ax.bar(x, row['speedup'], width, color=f'C{j}', label=name if i == 0 else None)
                if 'ideal' in row:
                    ax.plot([x - width / 2, x + width / 2], [row['ideal']] * 2, 'k--', lw=1)
        ax.axhline(1.0, color='grey', lw=0.8)
        ax.set_xticks(range(len(cases)), [f'{m}\nbatch {b}' for m, b in cases], fontsize=8)
        ax.set_ylabel('speed-up (x)')
        ax.set_title(title + ('; dashes: ideal (FLOPs)' if reference == 'dense' else ''),
                     fontsize=9)
        ax.legend(fontsize=7)
    layers = sections.get('nm', {}).get('figures', {}).get('per_layer', [])
    ax = axes[2]
    if layers:
        labels = [f'{r["in_channels"]}->{r["out_channels"]} {r["hw"][0]}x{r["hw"][1]} '
                  f'b{r["batch"]}' for r in layers]
        ax.barh(range(len(layers)), [r['speedup_vs_conv'] for r in layers], color='C0',
                label='vs cuDNN conv')
        ax.plot([r['speedup_vs_dense_matmul'] for r in layers], range(len(layers)), 'k|',
                ms=8, label='vs dense matmul')
        ax.axvline(1.0, color='grey', lw=0.8)
        ax.set_yticks(range(len(layers)), labels, fontsize=6)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, 'not measured', ha='center', va='center')
    ax.set_title('2:4 per 1x1 conv: sparse speed-up', fontsize=9)
    m = report['machine']
    fig.suptitle(f'{m.get("gpu", "CPU")} (torch {m["torch"]}), {report["args"].get("dtype")}, '
                 'channels-last', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
