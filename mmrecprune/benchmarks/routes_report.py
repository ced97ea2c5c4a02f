"""The report of ``bench_routes.py``: the CPU speed-up of each route's whole slim model, the
machine's load while the stages ran, the Markdown table and the figure."""
import json
import os
import os.path as osp
import threading
import time

from mmrecprune.benchmarks import plots
from mmrecprune.benchmarks.leaderboard.grid import level_key
from mmrecprune.benchmarks.probe import DET, SEG
from mmrecprune.benchmarks.stage_runner import write_summary
from mmrecprune.benchmarks.stats import fmt, fmt_paired, mean_std, paired

from .routes import DENSE_ROWS, REFERENCE, ROUTE_TITLES, ROUTES, TASKS, TICKET_METHODS

TICKET_CFGS = dict(det=DET[1], seg=SEG[1])
SPEED_BATCH = 8
PRINT_ORDER = ('a_psap', 'a_l1', 'b_l1', 'c', 'c_ft')


def build_model(config, options=None):
    """The model ``config`` builds (its default scope, SyncBN as BN), in eval mode; weights as
    built (the timing needs only the shapes)."""
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope

    from mmrecprune.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options or {})
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return revert_sync_batchnorm(MODELS.build(cfg.model)).eval()


def slim_models(routes, task, seed, f):
    """``{route: (config, options)}`` of the slim models of ``seed`` that exist: (a) the probe
    on the ticket, (b) and (c) the written ``*_model.py`` (c + fine-tune has (c)'s shapes)."""
    out = {}
    for route in routes.args.routes:
        if route in TICKET_METHODS:
            ticket = routes.ticket_path(route, seed, f)
            if osp.isfile(ticket):
                out[route] = (TICKET_CFGS[task], {'model.backbone.ticket': ticket})
        elif route == 'b_l1':
            config = osp.join(routes.intask_work(task, seed, f), 'tickets', 'slim_model.py')
            if osp.isfile(config):
                out[route] = (config, None)
        elif route == 'c':
            config = osp.join(routes.posttrain_work(task, seed, f), 'ticket_model.py')
            if osp.isfile(config):
                out[route] = (config, None)
    return out


def measure_speedups(routes, path, repeats):
    """Dense / slim latency of every route's whole model (eager, batch 8 at 64x64, one thread,
    interleaved with the dense model) for the first seed that has it; written to ``path``
    with the load average at the time (other jobs share this machine)."""
    import torch

    from mmrecprune.analysis import interleaved_latency
    torch.set_num_threads(1)
    speed = dict(batch=SPEED_BATCH, threads=1, repeats=repeats, speedup={})
    for task in routes.args.tasks:
        dense = build_model(TASKS[task]['dense_cfg'])
        for f in routes.args.flops:
            level = level_key('structured', f)
            for seed in routes.args.seeds:
                found = slim_models(routes, task, seed, f)
                if found:
                    break
            if not found:
                continue
            models = dict(dense=dense, **{r: build_model(c, o) for r, (c, o) in found.items()})
            with torch.no_grad():
                lat = interleaved_latency(models, (SPEED_BATCH, 3, 64, 64), repeats=repeats,
                                          warmup=3)
            for route in found:
                speed['speedup'][f'{task}|{level:g}|{route}'] = dict(
                    seed=seed, value=lat['dense'] / lat[route],
                    dense_ms=1e3 * lat['dense'], slim_ms=1e3 * lat[route])
    speed['load_average'] = os.getloadavg()
    with open(path, 'w') as f:
        json.dump(speed, f, indent=2)
    return speed


class LoadSampler:
    """Samples the 1-minute load average every ``interval`` seconds while the stages run and
    appends the samples to ``path`` (the wall times are measured on a shared machine)."""

    def __init__(self, path, interval=60):
        self.path, self.interval = path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.wait(self.interval):
            samples = json.load(open(self.path)) if osp.isfile(self.path) else []
            samples.append([time.time(), os.getloadavg()[0]])
            with open(self.path, 'w') as f:
                json.dump(samples, f)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def by_seed(cells, route, task, level, index):
    """``{seed: cells[(route, task, level, seed)][index]}`` (0: the metric, 1: wall s)."""
    return {k[3]: v[index] for k, v in cells.items() if k[:3] == (route, task, level)}


def cost_ratio(cells, route, task, level, with_dense=False):
    """Per-seed wall time of ``route`` over the reference's (with the dense model's training
    added for the routes that start from it), as :func:`mean_std`."""
    walls = by_seed(cells, route, task, level, 1)
    ref = by_seed(cells, REFERENCE, task, level, 1)
    dense = by_seed(cells, 'dense', task, 0.0, 1)
    extra = with_dense and route not in TICKET_METHODS
    return mean_std([(w + (dense.get(s, 0) if extra else 0)) / ref[s]
                     for s, w in walls.items() if s in ref and (not extra or s in dense)])


def build_rows(cells, levels, speed):
    rows = []
    for level in levels:
        for route in PRINT_ORDER:
            row = dict(route=route, level=level)
            for task in TASKS:
                values = by_seed(cells, route, task, level, 0)
                row[task] = mean_std(values.values())
                row[f'{task}_vs_ref'] = (None if route == REFERENCE else paired(
                    values, by_seed(cells, REFERENCE, task, level, 0)))
                row[f'{task}_cost'] = cost_ratio(cells, route, task, level)
                row[f'{task}_cost_dense'] = cost_ratio(cells, route, task, level, True)
                row[f'{task}_wall_min'] = mean_std(
                    w / 60 for w in by_seed(cells, route, task, level, 1).values())
                sp = speed.get('speedup', {}).get(f'{task}|{level:g}|'
                                                  f'{"c" if route == "c_ft" else route}')
                row[f'{task}_speedup'] = None if sp is None else sp['value']
            if any(row[t] for t in TASKS):
                rows.append(row)
    return rows


def markdown(rows, cells):
    head = ('| route | FLOPs removed | det mAP | vs (a) L1 | seg mIoU | vs (a) L1 | det wall '
            '(min) | cost / (a) | + dense / (a) | seg wall (min) | cost / (a) | + dense / (a) '
            '| det CPU speed-up | seg CPU speed-up |')
    lines = [head, '|' + '---|' * head.count(' | ') + '---|']
    for route, title in zip(DENSE_ROWS, ('dense (the starting model of (b), (c))',
                                         ROUTE_TITLES['dense_long'])):
        value = {t: mean_std(by_seed(cells, route, t, 0.0, 0).values()) for t in TASKS}
        wall = {t: mean_std(w / 60 for w in by_seed(cells, route, t, 0.0, 1).values())
                for t in TASKS}
        if route == 'dense' or any(value.values()):
            lines.append(f'| {title} | - | {fmt(value["det"])} | - | {fmt(value["seg"])} | - '
                         f'| {fmt(wall["det"], 1)} | - | - | {fmt(wall["seg"], 1)} | - | - '
                         '| 1.00x | 1.00x |')
    for r in rows:
        cols = [ROUTE_TITLES[r['route']], f'-{r["level"]:g} %']
        for task in TASKS:
            cols += [fmt(r[task]), fmt_paired(r[f'{task}_vs_ref'])]
        for task in TASKS:
            cols += [fmt(r[f'{task}_wall_min'], 1), fmt(r[f'{task}_cost']),
                     fmt(r[f'{task}_cost_dense'])]
        cols += ['-' if r[f'{t}_speedup'] is None else f'{r[f"{t}_speedup"]:.2f}x'
                 for t in TASKS]
        lines.append('| ' + ' | '.join(cols) + ' |')
    return '\n'.join(lines)


def plot(rows, cells, path):
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 4))
    for ax, task in zip(axes, TASKS):
        for route in PRINT_ORDER:
            points = [(r['level'], r[task]) for r in rows if r['route'] == route and r[task]]
            if points:
                plots.errorbars(ax, points, label=ROUTE_TITLES[route])
        for route, style in zip(DENSE_ROWS, ('--', ':')):
            dense = mean_std(by_seed(cells, route, task, 0.0, 0).values())
            if dense:
                ax.axhline(dense[0], color='grey', linestyle=style,
                           label='dense' if route == 'dense' else 'dense, trained twice as long')
        ax.set_xlabel('backbone FLOPs removed (%)')
        ax.set_ylabel('det mAP (%)' if task == 'det' else 'seg mIoU (%)')
        ax.set_title(f'{"RetinaNet" if task == "det" else "Semantic FPN"}, 64x64 scenes')
    axes[0].legend(fontsize=7)
    plots.save(fig, path)


def write_report(args, cells, speed, elapsed):
    levels = [level_key('structured', f) for f in args.flops]
    rows = build_rows(cells, levels, speed)
    seeds = sorted({k[3] for k in cells})
    load = []
    load_path = osp.join(args.work_dir, 'load.json')
    if osp.isfile(load_path):
        load = [v for _, v in json.load(open(load_path))]
    note = (f'\n\nSeeds with results: {seeds} (of {args.seeds}); mean +- std over seeds, paired '
            f'differences vs {ROUTE_TITLES[REFERENCE]} (same seed) with wins. Wall times of '
            'the stages (training + one test pass each; (a) includes the classification '
            'pruning run) on a 2-core machine shared with other jobs'
            + (f' (1-min load average while they ran: median {sorted(load)[len(load) // 2]:.1f},'
               f' {min(load):.1f}-{max(load):.1f})' if load else '')
            + '. CPU speed-up: whole model, eager, batch 8 at 64x64, 1 thread, interleaved with '
            'the dense model' + (f', load average {speed["load_average"][0]:.1f} then'
                                 if speed else ' (not measured yet)')
            + f'. This invocation: {elapsed / 60:.1f} min.')
    table = markdown(rows, cells)
    print(table + note)
    write_summary(args.work_dir, table + note,
                  dict(seeds=args.seeds, flops=args.flops, rows=rows, speed=speed,
                       cells={'|'.join(map(str, k)): v for k, v in cells.items()}),
                  name='routes')
    if rows:
        plot(rows, cells, osp.join(args.work_dir, 'routes.png'))


__all__ = ['ROUTES', 'measure_speedups', 'write_report', 'LoadSampler', 'build_rows',
           'markdown']
