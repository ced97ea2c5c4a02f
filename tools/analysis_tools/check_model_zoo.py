"""Rebuild the embedded-default model-zoo entries and check them against their metafiles.

    python tools/analysis_tools/check_model_zoo.py [--models NAME ...] [--metafiles M ...]
    python tools/analysis_tools/check_model_zoo.py --sha256 \
        --models psap_r18-w16_1xb128-4e_fashionmnist
    python tools/analysis_tools/check_model_zoo.py --verify-file slim.pth --model NAME

**Check** (the default): every ``configs/*/metafile.yml`` entry trained on the embedded default
(``Training Data: Fashion-MNIST``) that has ``Results`` is rebuilt with its ``Config``: the
ordinary ``tools/train.py`` then ``tools/test.py --out-json`` on the final checkpoint, in
``--work-dir/<model name>``. A missing ``load_from`` that another config in ``configs/`` makes
(``work_dirs/<config name>/...``, e.g. the dense pretraining) is trained first, in that
``work_dirs`` folder. A model whose work dir already holds its test metrics from the same
commands is not run again (``--force`` rebuilds). Each metafile metric is then compared with
the measured one and a table is printed; the exit status is 1 if any comparison fails or a run
breaks, 2 for bad arguments or metafiles.

**Tolerance** (``--tolerance``, absolute, in the metric's points; default 1.0): the READMEs
report a top-1 spread of 0.02-0.13 (std over 3 seeds) for tickets pruned from the dense
checkpoint, up to 0.40 from random init, and 0.02-0.39 between two machines running the same
command (dense 92.49 / 92.47, RecPrune 91.69 / 91.61, Semantic FPN mIoU 26.98 / 26.74 and
25.42 / 25.03); 1.0 covers that with a margin, and still catches the failures seen so far
(collapsed detector runs: 8-11 points lower).

**Tickets**: a metafile entry whose run exports a ticket names it as ``Ticket: {File:
tickets/slim.pth, SHA256: <hex>}`` (``File`` inside the run's work dir). ``--sha256`` prints
the sha256 of every ticket a rebuilt run wrote (to record a file you publish);
``--verify-file PATH --model NAME`` checks a file you were given against the recorded sha256.
The hash identifies one file: a re-saved or rebuilt ticket has other bytes even where its
tensors are identical (compare those with ``tools/analysis_tools/tickets_unchanged.py``).

The library behind this tool is ``mmrecprune/benchmarks/model_zoo.py``.
"""
import argparse
import glob
import os.path as osp
import shlex
import subprocess
import sys

from mmrecprune import cli
from mmrecprune.benchmarks.model_zoo import (METRICS, ROOT, compare, execute, expected_metrics,
                                             finished, load_entries, plan, print_table,
                                             print_ticket_hashes, select, show, verify_file)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        epilog='Metric names understood: ' + ', '.join(f'{k!r} ({v[0]})'
                                                      for k, v in METRICS.items()))
    parser.add_argument('--metafiles', nargs='+', metavar='METAFILE',
                        help='metafiles to read (default: configs/*/metafile.yml)')
    parser.add_argument('--models', nargs='+', metavar='NAME',
                        help='only these entries (default: every embedded-default entry with '
                        'Results)')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'model_zoo'),
                        help='one sub-folder per model (default: work_dirs/model_zoo)')
    parser.add_argument('--tolerance', type=float, default=1.0,
                        help='largest |measured - metafile| that passes, in the metric\'s '
                        'points (default 1.0)')
    parser.add_argument('--force', action='store_true',
                        help='rebuild models whose work dir already holds their test metrics')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the commands a check would run, run nothing')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='passed to tools/train.py and tools/test.py of the checked models '
                        '(not to the runs that make their load_from)')
    parser.add_argument('--sha256', action='store_true',
                        help='also print the sha256 of every ticket the rebuilt runs wrote')
    parser.add_argument('--verify-file', metavar='PATH',
                        help='check this file against the sha256 the metafile records for '
                        '--model, and run nothing else')
    parser.add_argument('--model', metavar='NAME', help='the entry --verify-file checks against')
    args = parser.parse_args(argv)
    if args.tolerance < 0:
        parser.error(f'--tolerance must be >= 0, got {args.tolerance}')
    if (args.verify_file is None) != (args.model is None):
        parser.error('--verify-file and --model go together')
    return parser, args


def main(argv=None):
    _, args = parse_args(argv)
    cli.check_work_dir(args.work_dir)
    metafiles = args.metafiles or sorted(glob.glob(osp.join(ROOT, 'configs', '*',
                                                            'metafile.yml')))
    entries = load_entries(metafiles)
    if args.verify_file:
        return verify_file(entries, args.verify_file, args.model)
    chosen = select(entries, args.models)
    runs = [plan(entry, osp.abspath(args.work_dir), args.cfg_options) for _, entry in chosen]
    if args.dry_run:
        shown = set()
        for run in runs:
            for name, cmd, output in run['before']:
                if output not in shown:
                    show(name, cmd)
                    shown.add(output)
            reuse = finished(run) and not args.force
            for cmd in run['commands']:
                show(run['name'] + (' (finished, reused)' if reuse else ''), cmd)
        return 0
    rows = []
    for (path, entry), run in zip(chosen, runs):
        try:
            measured = execute(run, args.force)
        except subprocess.CalledProcessError as err:
            rows += [(entry['Name'], name, value, None, None,
                      f'ERROR: {shlex.join(err.cmd[1:3])} exited with {err.returncode}')
                     for name, value in expected_metrics(path, entry)]
            continue
        rows += compare(path, entry, measured, args.tolerance)
    print_table(rows, args.tolerance)
    if args.sha256:
        print()
        for (path, entry), run in zip(chosen, runs):
            print_ticket_hashes(path, entry, run['work_dir'])
    return 0 if all(r[5] == 'OK' for r in rows) else 1


if __name__ == '__main__':
    sys.exit(cli.run_tool(main))
