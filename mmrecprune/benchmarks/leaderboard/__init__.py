"""The leaderboard: every pruning method of the repo at matched sparsity / FLOPs, over seeds
(``tools/benchmarks/leaderboard.py`` runs :func:`main`; its docstring says what is compared).

:mod:`.grid` holds what runs (methods, baselines, configs, sizes, the command line),
:mod:`.runs` the pruning stages, :mod:`.scores` the scoring stages, :mod:`.tables` the tables
and :mod:`.plots` the figure.
"""
import os.path as osp
import sys
import time

from mmrecprune import cli
from mmrecprune.benchmarks.probe import PRETRAIN_CFG
from mmrecprune.benchmarks.stage_runner import (Pipeline, check_cfg_options, check_pretrained,
                                                run_parallel, write_summary)

from .grid import (BASELINES, IMP_TAYLOR_CFG, NM_CFG, NM_LEVEL, SCALES, SCENES, SCENES_DATA,
                   STRUCTURED, UNSTRUCTURED, fraction_of, level_key, parse_args, resolve_scale,
                   sparsity_of)
from .plots import plot
from .runs import FAILED, ticket_tasks, tolerant
from .scores import cell_tasks, dense_tasks, mask_jaccards
from .tables import COLUMNS, TITLES, build_rows, markdown, paired, pivot, report

__all__ = ['main', 'parse_args', 'resolve_scale', 'SCALES', 'SCENES', 'BASELINES', 'NM_CFG',
           'NM_LEVEL', 'IMP_TAYLOR_CFG', 'UNSTRUCTURED', 'STRUCTURED', 'COLUMNS', 'TITLES',
           'sparsity_of', 'fraction_of', 'level_key', 'ticket_tasks', 'cell_tasks', 'dense_tasks',
           'mask_jaccards', 'build_rows', 'markdown', 'pivot', 'paired', 'report', 'plot']


def measure_costs(entries, seed, latency_repeats):
    """``(costs, latency)`` by ``(method, kind, level)`` from the tickets of ``seed`` that
    exist: kept params / FLOPs of every one, the CPU speed-up of the structured ones (timed
    last, alone in this benchmark: the workers are done)."""
    from mmrecprune import analysis
    costs, latency = {}, {}
    for (method, kind, level, s), (ticket, _) in entries.items():
        if s == seed and osp.isfile(ticket):
            costs[(method, kind, level)] = analysis.ticket_costs(ticket)
    for (method, kind, level, s), (ticket, _) in entries.items():
        if kind == 'structured' and s == seed and osp.isfile(ticket):
            latency[(method, kind, level)] = analysis.latency_ratio(ticket, latency_repeats)
    return costs, latency


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    check_pretrained(args.pretrained)
    cli.check_work_dir(args.selfsup_dir, '--selfsup-dir')
    pipe = Pipeline(args.work_dir, threads_per_stage=1, report_only=args.report_only,
                    dry_run=args.dry_run, cfg_options=check_cfg_options(args.cfg_options))
    if not osp.isfile(args.pretrained):
        pipe.run('pretrain', [[sys.executable, 'tools/train.py', PRETRAIN_CFG, '--work-dir',
                               osp.dirname(args.pretrained)]], [args.pretrained])
    per_seed, entries = [], {}
    for seed in args.seeds:
        tasks, seed_entries = ticket_tasks(pipe, args, seed)
        per_seed.append(tasks)
        entries.update(seed_entries)
    # the longest runs (RecPrune, IMP: listed first for every seed) of all seeds first, so the
    # workers finish together
    run_parallel([tolerant(t) for i in range(max(map(len, per_seed), default=0))
                  for tasks in per_seed if i < len(tasks) for t in [tasks[i]]], args.jobs)
    print(f'[leaderboard] tickets ready after {(time.time() - start) / 60:.1f} min', flush=True)
    if args.scenes_levels:
        root, data_args = SCENES_DATA[args.size['scenes']]
        pipe.run(f'scenes/{args.size["scenes"]}',
                 [[sys.executable, 'tools/dataset_converters/make_fashion_scenes.py',
                   *data_args]], [osp.join(root, 'annotations', 'instances_test.json')])
    keyed = []  # (cell key, metric, callable); cheap scores first, the scenes probes last
    for seed in args.seeds:
        keyed += [(('dense', 'dense', 0.0, seed), m, t) for m, t in dense_tasks(pipe, args, seed)]
    for key, (ticket, extra) in entries.items():
        keyed += [(key, m, t) for m, t in cell_tasks(pipe, args, key, ticket, extra)]
    keyed.sort(key=lambda k: k[1] not in ('top1', 'probe'))
    values = run_parallel([tolerant(t) for _, _, t in keyed], args.jobs)
    cells = {}
    for (key, metric, _), value in zip(keyed, values):
        method, kind, level, seed = key
        cells.setdefault((method, kind, level), {}).setdefault(metric, {})[seed] = value
    if args.report_only and not args.dry_run:
        # what has finished: a method never run here (one added since, e.g.) adds no empty rows
        cells = {key: metrics for key, metrics in cells.items()
                 if any(v is not None for seeds in metrics.values() for v in seeds.values())}
    costs, latency = ({}, {}) if args.dry_run else measure_costs(entries, args.seeds[0],
                                                                 args.latency_repeats)
    rows = build_rows(cells, costs, latency, {} if args.dry_run else mask_jaccards(entries))
    table, note = report(rows, args.scale, args.size, args.seeds, args.jobs,
                         time.time() - start)
    print(table + note)
    if args.dry_run:
        return
    write_summary(args.work_dir, table + note,
                  dict(scale=args.scale, size=args.size, seeds=args.seeds, rows=rows,
                       cells={'|'.join(map(str, k)): v for k, v in cells.items()}),
                  name='leaderboard')
    if any(r['top1'] for r in rows):
        plot(rows, osp.join(args.work_dir, 'leaderboard.png'))
    if FAILED:
        raise SystemExit(f'{len(FAILED)} runs failed (their cells are empty):\n  ' +
                         '\n  '.join(FAILED))
