"""Three routes to a slim detector / segmentor on the 64x64 scenes (issue 23, item 3), as
stages of a :class:`~mmrecprune.benchmarks.stage_runner.Pipeline`
(``tools/benchmarks/bench_routes.py`` runs :func:`main`):

* (a) the seeds' route: prune the backbone on classification (the leaderboard's PSAP and
  L1-uniform tickets), then fine-tune the probe detector / segmentor on the ticket. The
  leaderboard's own stages run it; its finished stages (``--leaderboard-dir``) are reused;
* (b) in-task pruning: the dense probe model trained first (the user's model), then the L1-uniform
  hook in the probe's own config and schedule, from those weights
  (``configs/intask/l1-uniform_*_probe_fashionscenes64.py``);
* (c) post-training pruning of the same dense model (``tools/prune_post_training.py``: L1,
  uniform ranking, least-squares re-fit, no training), and (c) + a fine-tune of a quarter of the
  probe's iterations.

:mod:`.routes_report` holds the table, the plot and the CPU timing.
"""
import argparse
import contextlib
import functools
import os.path as osp
import sys
import time

from mmrecprune.benchmarks.leaderboard.grid import level_key
from mmrecprune.benchmarks.leaderboard.grid import parse_args as leaderboard_args
from mmrecprune.benchmarks.leaderboard.runs import FAILED, structured_run, tolerant
from mmrecprune.benchmarks.leaderboard.scores import scenes_tasks
from mmrecprune.benchmarks.probe import DET, SEG, prepare_inputs
from mmrecprune.benchmarks.stage_runner import (Pipeline, add_run_options, check_cfg_options,
                                                check_pretrained, read_json, read_results,
                                                run_parallel, train_and_test)

DESCRIPTION = ('Universal tickets against task-specific pruning: the seeds\' route, in-task '
               'pruning and post-training pruning of a trained RetinaNet / Semantic FPN on '
               'the 64x64 scenes, at equal backbone FLOPs, over seeds.')
ROUTES = ('a_l1', 'b_l1', 'c', 'c_ft', 'dense_long', 'a_psap')  # the order they run in
ROUTE_TITLES = dict(
    a_l1='(a) L1-uniform ticket + fine-tune', a_psap='(a) PSAP ticket + fine-tune',
    b_l1='(b) in-task L1-uniform', c='(c) post-training L1-uniform, no training',
    c_ft='(c) + 1/4 fine-tune',
    dense_long='dense + as many iterations again, no pruning (control for (b))')
# levelless rows: the dense model, and the control of how much (b) gains from training longer
DENSE_ROWS = ('dense', 'dense_long')
REFERENCE = 'a_l1'  # the same criterion and widths as (b) and (c): only the route differs
TICKET_METHODS = dict(a_l1='l1_uniform', a_psap='psap')
INTASK_CFGS = dict(det='configs/intask/l1-uniform_retinanet_r18-w16_fpn_probe_fashionscenes64.py',
                   seg='configs/intask/l1-uniform_fpn_r18-w16_probe_fashionscenes64.py')
# per task: the dense probe config, its last checkpoint, the metric (det mAP in %), and the
# (c) + fine-tune schedule: the probe's scaled to a quarter (det: 3 of 12 epochs, warm-up 125 of
# 500 iterations, the lr step at epoch 2 of 3 as at 8 of 12; seg: poly over 250 of 1000)
TASKS = dict(
    det=dict(dense_cfg=DET[0], last='epoch_12.pth', metric='coco/bbox_mAP', scale=100,
             finetune_last='epoch_3.pth',
             finetune=['train_cfg.max_epochs=3', 'train_cfg.val_interval=3',
                       'param_scheduler.0.end=125', 'param_scheduler.1.end=3',
                       'param_scheduler.1.milestones=[2]']),
    seg=dict(dense_cfg=SEG[0], last='iter_1000.pth', metric='mIoU', scale=1,
             finetune_last='iter_250.pth',
             finetune=['train_cfg.max_iters=250', 'train_cfg.val_interval=250',
                       'param_scheduler.0.end=250', 'default_hooks.checkpoint.interval=250']))
CALIBRATION_IMAGES = 256
# the leaderboard's levels count backbone FLOPs at 56x56 (its classification input); the probes
# run at 64x64, where the same widths remove a little less (stage 3 and 4 maps round up to the
# same 4x4 and 2x2 at both sizes, so the stem's share grows): (b) and (c) are given the 64x64
# fraction of the widths L1-uniform reaches at the level, so all routes end at equal widths
LEVEL_INPUT, PROBE_INPUT = 56, 64


@functools.lru_cache()
def probe_fraction(f):
    """The fraction of the probe backbone's FLOPs at 64x64 that the L1-uniform widths removing
    ``f`` of them at 56x56 remove (rounded down to 6 digits, so the pruners' bisection lands on
    those widths, not narrower ones)."""
    import math

    import torch

    from mmrecprune.methods import L1UniformPruner
    from mmrecprune.sparsity.channel_cost import ChannelCostModel
    from mmrecprune.sparsity.cost_schedule import bisect

    from .routes_report import build_model
    model = build_model(TASKS['det']['dense_cfg'])
    pruner = L1UniformPruner(target=dict(flops=f), num_steps=1)
    pruner.attach(model, torch.zeros(1, 3, LEVEL_INPUT, LEVEL_INPUT))
    cost = functools.partial(pruner.cost_model.cost, metric='flops')
    _, widths = bisect(pruner.uniform_widths, cost, pruner.target_cost(1), 0.0, 1.0)
    probe = ChannelCostModel(model, pruner.groups, torch.zeros(1, 3, PROBE_INPUT, PROBE_INPUT),
                             'backbone')
    return math.floor(1e6 * (1 - probe.cost(widths) / probe.cost(probe.dense_widths))) / 1e6


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument('--work-dir', default='work_dirs/bench_routes')
    parser.add_argument('--leaderboard-dir', default='work_dirs/leaderboard',
                        help="the leaderboard's work dir: its finished stages of route (a) "
                             '(tickets, fine-tuned scenes probes) and dense scenes probes are '
                             'reused, read only; missing ones run here, under '
                             'WORK_DIR/leaderboard, through the leaderboard\'s own stages')
    parser.add_argument('--pretrained',
                        default='work_dirs/resnet18-w16_1xb128-6e_fashionmnist/epoch_6.pth',
                        help='the dense classifier (trained first if missing)')
    parser.add_argument('--flops', type=float, nargs='+', default=[0.75, 0.5],
                        help='fractions of backbone FLOPs removed, in the order they run')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--routes', nargs='+', default=list(ROUTES), choices=ROUTES)
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=list(TASKS))
    parser.add_argument('--latency-repeats', type=int, default=30)
    parser.add_argument('--measure-speed', action='store_true',
                        help='with --report-only: time the slim models that exist now (a full '
                             'run times them at its end)')
    add_run_options(parser, jobs=1)
    args = parser.parse_args(argv)
    for f in args.flops:
        if not 0 < f < 1:
            parser.error(f'--flops {f}: a fraction of the backbone FLOPs in (0, 1)')
    return args


class Routes:
    """The stages of every route for one work dir: ``run_*`` return ``(value, wall_s)`` of a
    (route, task, level, seed), or None when a stage has not finished (report-only)."""

    def __init__(self, pipe, args):
        self.pipe, self.args = pipe, args
        lb = osp.join(args.leaderboard_dir, 'results.json')
        self.lb_results = read_results(lb) if osp.isfile(lb) else {}
        # the leaderboard's grid at its default scale, its scenes probes fine-tuned only,
        # rooted in our work dir: missing route (a) stages run there under their own names
        self.lb_args = leaderboard_args([
            '--work-dir', osp.join(args.work_dir, 'leaderboard'), '--pretrained',
            args.pretrained, '--scenes-modes', 'finetuned', '--scenes-levels',
            *[str(level_key('structured', f)) for f in args.flops]])

    def record(self, name):
        """The record of stage ``name``: ours, else the leaderboard's (None if neither)."""
        return self.pipe.results.get(name) or self.lb_results.get(name)

    def wall(self, *names):
        records = [self.record(n) for n in names]
        return None if None in records else sum(r['wall_s'] for r in records)

    def leaderboard_done(self, name, outputs):
        record = self.lb_results.get(name)
        return record is not None and all(
            osp.exists(osp.join(self.args.leaderboard_dir, p)) for p in outputs)

    # the dense model every (b) and (c) run starts from: the probe recipe on the classifier
    def dense(self, task, seed):
        """``(record, checkpoint)`` of the dense probe model (the leaderboard's dense scenes
        probe when it has one)."""
        spec = TASKS[task]
        lb_stage = f'{task}_finetuned/dense/seed{seed}'
        lb_ckpt = osp.join(f'seed{seed}', 'scores', 'dense', f'{task}_finetuned', spec['last'])
        if self.leaderboard_done(lb_stage, [lb_ckpt]):
            return self.lb_results[lb_stage], osp.join(self.args.leaderboard_dir, lb_ckpt)
        work = osp.join(self.args.work_dir, 'dense', f'seed{seed}', task)
        record = train_and_test(
            self.pipe, f'dense/{task}/seed{seed}', spec['dense_cfg'], work, spec['last'],
            extra=['--cfg-options', f'model.backbone.init_cfg.checkpoint={self.args.pretrained}',
                   f'randomness.seed={seed}'])
        return record, osp.join(work, spec['last'])

    def run_dense_long(self, task, seed):
        """The control of (b): the dense model trained again with the probe recipe from its
        own weights, no pruning (what (b)'s extra training alone gives)."""
        record, dense_ckpt = self.dense(task, seed)
        spec = TASKS[task]
        longer = train_and_test(
            self.pipe, f'dense_long/{task}/seed{seed}', spec['dense_cfg'],
            osp.join(self.args.work_dir, 'dense_long', f'seed{seed}', task), spec['last'],
            extra=['--cfg-options', f'load_from={dense_ckpt}', 'model.backbone.init_cfg=None',
                   f'randomness.seed={seed}'])
        return None if longer is None or record is None else (
            self.value(task, longer['metrics']), record['wall_s'] + longer['wall_s'])

    def run_dense(self, task, seed):
        record, _ = self.dense(task, seed)
        return None if record is None else (self.value(task, record['metrics']),
                                            record['wall_s'])

    def value(self, task, metrics):
        spec = TASKS[task]
        return spec['scale'] * metrics[spec['metric']]

    # route (a): the leaderboard's ticket and fine-tuned scenes probe
    def ticket_path(self, route, seed, f):
        """The classification ticket of (a): the leaderboard's if it finished it, else ours."""
        name = f'{TICKET_METHODS[route]}_f{round(100 * f)}'
        rel = osp.join(f'seed{seed}', name, 'tickets', 'slim.pth')
        if self.leaderboard_done(f'prune/{name}/seed{seed}', [rel]):
            return osp.join(self.args.leaderboard_dir, rel)
        return osp.join(self.lb_args.work_dir, rel)

    def run_ticket(self, route, task, seed, f):
        method, level = TICKET_METHODS[route], level_key('structured', f)
        prune_stage = f'prune/{method}_f{round(100 * f)}/seed{seed}'
        ticket = self.ticket_path(route, seed, f)
        if not ticket.startswith(self.args.leaderboard_dir):
            structured_run(self.pipe, self.lb_args, method, seed, f)  # writes ``ticket``
        stage = f'{method}/{level:g}/seed{seed}'
        probe_stage = f'{task}_finetuned/{stage}'
        if probe_stage in self.lb_results:  # the leaderboard's probe of its own ticket
            value = self.value(task, self.lb_results[probe_stage]['metrics'])
        else:
            work = osp.join(self.args.work_dir, 'leaderboard', f'seed{seed}', 'scores',
                            f'{method}_{level:g}')
            runs = dict(scenes_tasks(self.pipe, self.lb_args, stage, work,
                                     [f'model.backbone.ticket={ticket}',
                                      f'randomness.seed={seed}'], dense=False))
            value = runs[f'{task}_finetuned']()
        wall = self.wall(prune_stage, probe_stage)
        return None if value is None or wall is None else (value, wall)

    # route (b): the pruning hook in the task's own training, from the dense model
    def intask_work(self, task, seed, f):
        return osp.join(self.args.work_dir, f'intask_f{round(100 * f)}', f'seed{seed}', task)

    def run_intask(self, task, seed, f):
        _, dense_ckpt = self.dense(task, seed)
        work = self.intask_work(task, seed, f)
        slim_cfg, slim_ckpt = (osp.join(work, 'tickets', f'slim_model.{ext}')
                               for ext in ('py', 'pth'))
        metrics = osp.join(work, 'test_metrics.json')
        py = sys.executable
        record = self.pipe.run(
            f'intask/{task}/f{round(100 * f)}/seed{seed}',
            [[py, 'tools/train.py', INTASK_CFGS[task], '--work-dir', work, '--cfg-options',
              f'load_from={dense_ckpt}', f'randomness.seed={seed}',
              f'custom_hooks.0.pruner.target.flops={probe_fraction(f)}'],
             [py, 'tools/test.py', slim_cfg, slim_ckpt, '--work-dir', osp.join(work, 'test'),
              '--out-json', metrics, '--force']],
            [slim_ckpt, metrics], lambda: read_json(metrics))
        return None if record is None else (self.value(task, record['metrics']),
                                            record['wall_s'])

    # route (c): post-training pruning of the dense model, then a quarter fine-tune
    def posttrain_work(self, task, seed, f):
        return osp.join(self.args.work_dir, f'posttrain_f{round(100 * f)}', f'seed{seed}', task)

    def posttrain(self, task, seed, f):
        _, dense_ckpt = self.dense(task, seed)
        work = self.posttrain_work(task, seed, f)
        result = osp.join(work, 'result.json')
        return self.pipe.run(
            f'posttrain/{task}/f{round(100 * f)}/seed{seed}',
            [[sys.executable, 'tools/prune_post_training.py', TASKS[task]['dense_cfg'],
              dense_ckpt, '--flops', str(probe_fraction(f)), '--importance', 'L1',
              '--ranking', 'uniform', '--reconstruction', 'least_squares+mean',
              '--calibration-images', str(CALIBRATION_IMAGES), '--seed', str(seed), '--out',
              osp.join(work, 'ticket.pth'), '--out-json', result, '--force', '--work-dir',
              work, *(['--cfg-options', *self.pipe.cfg_options] if self.pipe.cfg_options
                      else [])]],
            [osp.join(work, 'ticket_model.pth'), result], lambda: read_json(result))

    def run_posttrain(self, task, seed, f):
        record = self.posttrain(task, seed, f)
        return None if record is None else (self.value(task, record['metrics']['after']),
                                            record['wall_s'])

    def run_posttrain_finetune(self, task, seed, f):
        pruned = self.posttrain(task, seed, f)
        work = self.posttrain_work(task, seed, f)
        spec = TASKS[task]
        record = train_and_test(
            self.pipe, f'posttrain_ft/{task}/f{round(100 * f)}/seed{seed}',
            osp.join(work, 'ticket_model.py'), osp.join(work, 'finetune'), spec['finetune_last'],
            extra=['--cfg-options', f'load_from={osp.join(work, "ticket_model.pth")}',
                   f'randomness.seed={seed}', *spec['finetune']])
        if record is None or pruned is None:
            return None
        return self.value(task, record['metrics']), pruned['wall_s'] + record['wall_s']

    def cell(self, route, task, seed, f):
        """``(value, wall_s)`` of ``route`` on ``task`` at ``f`` FLOPs removed, ``seed``."""
        if route in TICKET_METHODS:
            return self.run_ticket(route, task, seed, f)
        if route == 'dense_long':
            return self.run_dense_long(task, seed)
        run = dict(b_l1=self.run_intask, c=self.run_posttrain,
                   c_ft=self.run_posttrain_finetune)[route]
        return run(task, seed, f)

    def tasks(self):
        """``[(key, callable)]`` with ``key = (route, task, level, seed)`` (route 'dense' at
        level 0), in the order they run: level by level (``--flops`` order), seed by seed."""
        args, out = self.args, []
        for f in args.flops:
            level = level_key('structured', f)
            for seed in args.seeds:
                for route in args.routes:
                    for task in args.tasks:
                        if route in ('b_l1', 'c', 'c_ft'):  # their dense model, reported too
                            out.append((('dense', task, 0.0, seed),
                                        functools.partial(self.run_dense, task, seed)))
                        out.append(((route, task, 0.0 if route in DENSE_ROWS else level, seed),
                                    functools.partial(self.cell, route, task, seed, f)))
        return out


def main(argv=None):
    from . import routes_report
    args = parse_args(argv)
    start = time.time()
    check_pretrained(args.pretrained)
    pipe = Pipeline(args.work_dir, threads_per_stage=1, report_only=args.report_only,
                    dry_run=args.dry_run, cfg_options=check_cfg_options(args.cfg_options))
    prepare_inputs(pipe, args.pretrained)
    routes = Routes(pipe, args)
    keyed = routes.tasks()
    with routes_report.LoadSampler(osp.join(args.work_dir, 'load.json')) if not \
            pipe.report_only else contextlib.nullcontext():
        values = run_parallel([tolerant(fn) for _, fn in keyed], args.jobs)
    cells = {}
    for (key, _), value in zip(keyed, values):
        if value is not None:
            cells[key] = value
    if args.dry_run:
        print(f'[bench_routes] {len(keyed)} cells planned')
        return
    speed_path = osp.join(args.work_dir, 'speed.json')
    if not args.report_only or args.measure_speed:  # timed last, the workers done
        routes_report.measure_speedups(routes, speed_path, args.latency_repeats)
    speed = read_json(speed_path) if osp.isfile(speed_path) else {}
    routes_report.write_report(args, cells, speed, time.time() - start)
    if FAILED:
        raise SystemExit(f'{len(FAILED)} runs failed (their cells are empty):\n  ' +
                         '\n  '.join(FAILED))
