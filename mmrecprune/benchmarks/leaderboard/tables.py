"""The leaderboard's tables: a row per (method, kind, level) with mean +- std over seeds and
the paired difference against its baseline, as one wide Markdown table and compact pivots."""
import json

from mmrecprune.benchmarks import stats
from mmrecprune.benchmarks.stats import fmt, fmt_paired, mean_std

from .grid import BASELINES, STRUCTURED, UNSTRUCTURED

COLUMNS = ('top1', 'probe', 'det_finetuned', 'det_frozen', 'seg_finetuned', 'seg_frozen')
TITLES = dict(top1='top-1 re-trained', probe='linear probe', det_finetuned='det mAP',
              det_frozen='det mAP frozen', seg_finetuned='seg mIoU',
              seg_frozen='seg mIoU frozen')


def paired(cells, method, baseline, kind, level, metric):
    """Per-seed differences ``method - baseline`` at one level: (mean, std, n, wins)."""
    a = cells.get((method, kind, level), {}).get(metric, {})
    b = cells.get((baseline, kind, level) if baseline != 'dense' else ('dense', 'dense', 0.0),
                  {}).get(metric, {})
    return stats.paired(a, b)


def build_rows(cells, costs, latency, jaccards=None):
    """Every (method, kind, level) row with its summaries and paired differences."""
    rows = []
    for (method, kind, level), metrics in sorted(
            cells.items(), key=lambda kv: (kv[0][1] != 'dense', kv[0][1], kv[0][2],
                                           (UNSTRUCTURED + STRUCTURED + ('dense', ))
                                           .index(kv[0][0]))):
        row = dict(method=method, kind=kind, level=level, costs=costs.get((method, kind, level)),
                   latency=latency.get((method, kind, level)), baseline=BASELINES.get(method),
                   jaccard_imp=mean_std((jaccards or {}).get((method, kind, level), [])))
        for metric in COLUMNS:
            row[metric] = mean_std(list(metrics.get(metric, {}).values()))
            if row['baseline']:
                row[f'{metric}_vs_baseline'] = paired(cells, method, row['baseline'], kind,
                                                      level, metric)
        rows.append(row)
    return rows


def markdown(rows, columns):
    """The wide table: a line per row, costs and mask overlap, then per column of ``columns``
    the mean +- std and the paired difference against the baseline."""
    head = ['method', 'kind', 'level', 'params kept', 'FLOPs kept', 'CPU speed-up',
            'mask Jaccard vs IMP']
    for c in columns:
        head += [TITLES[c], 'vs baseline']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        level = ('-' if r['kind'] == 'dense' else
                 f'{r["level"]:.1f} % sparse' if r['kind'] == 'unstructured'
                 else f'-{r["level"]:.0f} % FLOPs')
        costs = r['costs']
        cells = [r['method'], r['kind'], level,
                 f'{costs[0]:.1f} %' if costs else '-', f'{costs[1]:.1f} %' if costs else '-',
                 f'{r["latency"]:.2f}x' if r['latency'] else '-',
                 fmt(r['jaccard_imp'], 3) if r.get('jaccard_imp') else '-']
        for c in columns:
            vs = r.get(f'{c}_vs_baseline')
            cells += [fmt(r[c]), (f'{fmt_paired(vs)} vs {r["baseline"]}' if vs else '-')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def pivot(rows, metric):
    """One compact table per kind: a row per method, a column per level, each cell the mean
    and, below the method's name, its paired difference against its baseline."""
    out = []
    rows = [r for r in rows if r[metric] is not None]  # what this metric was run on
    for kind in ('unstructured', 'structured'):
        levels = sorted({r['level'] for r in rows if r['kind'] == kind})
        if not levels:
            continue
        head = ['method (baseline)'] + [
            f'{lv:.1f} % sparse' if kind == 'unstructured' else f'-{lv:.0f} % FLOPs'
            for lv in levels]
        lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        for method in [m for m in UNSTRUCTURED + STRUCTURED
                       if any(r['method'] == m and r['kind'] == kind for r in rows)]:
            cells = []
            for lv in levels:
                r = next((r for r in rows if (r['method'], r['kind'], r['level']) ==
                          (method, kind, lv)), None)
                if r is None or r[metric] is None:
                    cells.append('-')
                    continue
                vs = r.get(f'{metric}_vs_baseline')
                cells.append(f'{r[metric][0]:.2f}' + (f' ({fmt_paired(vs)})' if vs else ''))
            baseline = BASELINES.get(method)
            lines.append(f'| {method}' + (f' ({baseline})' if baseline else '') + ' | ' +
                         ' | '.join(cells) + ' |')
        out.append('\n'.join(lines))
    return '\n\n'.join(out)


def report(rows, scale, size, seeds, jobs, wall):
    """``(tables, note)`` of ``leaderboard.md``: the wide table of the columns that have values,
    the compact view of each (what the README quotes) and what the numbers are."""
    columns = [c for c in COLUMNS if any(r[c] for r in rows)] or ['top1', 'probe']
    table = markdown(rows, columns)
    for metric in columns:
        table += f'\n\n**{TITLES[metric]}** (mean; paired difference vs baseline)\n\n'
        table += pivot(rows, metric)
    note = (f'\n\nScale {scale!r} ({json.dumps(size)}), seeds {seeds}; mean +- '
            f'std over seeds; "vs baseline": mean +- std of the per-seed differences (same '
            f'seed, same level) and the seeds where the method is higher. Params / FLOPs kept '
            f'and CPU speed-up (dense / slim, eager, batch 8, 56x56, 1 thread) from seed '
            f'{seeds[0]}\'s tickets. Wall time of this invocation {wall / 60:.1f} min with '
            f'{jobs} workers.')
    return table, note
