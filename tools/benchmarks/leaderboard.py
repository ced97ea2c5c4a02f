"""One leaderboard of every pruning method in the repo, at matched sparsity / FLOPs, over seeds.

    python tools/benchmarks/leaderboard.py [--scale default|smoke|faithful] [--seeds 0 1 2]
        [--scenes-levels 91.4 75] [--dry-run] [--report-only]

Unstructured methods are compared at the same overall sparsity (20 % of the remaining weights
per round: 7 / 11 / 14 rounds = 79.0 / 91.4 / 95.6 %), structured ones at the same fraction of
backbone FLOPs removed (-50 / -75 %; -77.1 % is the most that pruning the internal channels of
the residual blocks can remove), all on the embedded default (ResNet-18-w16, Fashion-MNIST):

* unstructured: ``recprune`` (decoder stage, then the RecPrune loop), ``imp``, ``random`` (IMP's
  ticket with random positions at its per-layer sparsity: the control), ``magnitude`` (one
  round of the IMP loop that prunes the whole level at once: what iterating buys), ``onthefly``
  (hyperspherical training with the gap penalty for that level, cut, no fine-tuning; trained from
  scratch on ``onthefly_images``) and ``rotnet`` (the self-supervised tickets of
  ``bench_selfsup.py``, read from its work dir where it has them: from scratch on 5000 images);
  the last two train networks of their own, so their baselines do too: ``magnitude_scratch``
  (one-shot magnitude pruning of a dense network trained as ``onthefly`` trains) and
  ``supervised_scratch`` (``bench_selfsup.py``'s supervised tickets of the same loop);
  ``nm`` (2:4 tickets: one round of the IMP loop under the 2:4 constraint,
  ``configs/nm/nm-2to4_r18-w16_fashionmnist.py``) at 50 %, against ``magnitude`` at 50 % (the
  same round pruning 50 % by global magnitude, unstructured);
* structured: ``psap``, ``l1_uniform``, ``l1_global`` and ``random_uniform`` (L1-uniform's
  widths, random channels: the control).

Every ticket gets the same two scores: **top-1 after re-training** with labels (the ticket's
weights and mask, mask fixed, ``retrain_epochs`` on ``retrain_images``: how lottery tickets are
used) and a **linear probe** (backbone frozen, BN in eval, only a linear head trains: the
features as they are). ``--scenes-levels`` adds the scenes probes at those levels: RetinaNet and
Semantic FPN, backbone fine-tuned and frozen (``frozen_stages=4``, ``norm_eval=True``), on the
64x64 probe scenes (``scenes=probe64``, the default and smoke scales) or the main job's 128x128
scenes and configs (``scenes=full``, the faithful scale). Kept parameters and FLOPs come from
each ticket; CPU latency (eager, batch 8, 56x56, 1 thread, interleaved with the dense backbone)
for structured tickets is measured last, with nothing else running in this benchmark.

Writes ``leaderboard.md``, ``leaderboard.json`` and ``leaderboard.png`` to ``--work-dir``: mean
+- std over seeds and, per method, the paired difference against its baseline (same seed,
same level) with its spread and how many seeds it wins. Stages are ordinary ``tools/train.py`` /
``tools/test.py`` runs, printed before they run and reused when finished, so an interrupted
leaderboard continues where it stopped, and any cell can be re-run by hand.
"""
import argparse
import json
import math
import os.path as osp
import statistics
import subprocess
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
# analyze_ticket.load_models (imported where used: it pulls in MMEngine)
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', 'analysis_tools'))
from probe import (DECODER_CFG, DET, FROZEN, LOTTERY_CFGS, PRETRAIN_CFG,  # noqa: E402
                   SCENES64_ARGS, SCENES64_ROOT, SEG)
from stage_runner import (Pipeline, add_cfg_options, check_cfg_options,  # noqa: E402
                          check_pretrained, cli, read_json, run_parallel, train_and_test,
                          write_summary)

ONTHEFLY_CFG = 'configs/onthefly/onthefly_r18-w16_1xb128-6e_fashionmnist.py'
NM_CFG = 'configs/nm/nm-2to4_r18-w16_fashionmnist.py'
NM_LEVEL = 50.0  # 2:4 tickets are 50 % sparse: compared with magnitude pruning at 50 %
STRUCTURED_CFGS = dict(psap='configs/psap/psap_r18-w16_fashionmnist.py',
                       l1_uniform='configs/l1/l1-uniform_r18-w16_fashionmnist.py',
                       l1_global='configs/l1/l1-global_r18-w16_fashionmnist.py',
                       random_uniform='configs/l1/random-uniform_r18-w16_fashionmnist.py')
RETRAIN_CFG = 'configs/selfsup/label-retrain_r18-w16-ticket_fashionmnist.py'
PROBE_CFG = 'configs/selfsup/linear-probe_r18-w16-ticket_fashionmnist.py'
DENSE_PROBE_CFG = 'configs/selfsup/linear-probe_r18-w16_fashionmnist.py'
SCENES = dict(  # size -> task -> (ticket config, dense config, last checkpoint, metric)
    probe64=dict(det=(DET[1], DET[0], 'epoch_12.pth', 'coco/bbox_mAP'),
                 seg=(SEG[1], SEG[0], 'iter_1000.pth', 'mIoU')),
    full=dict(  # the main job's 128x128 scenes (make demo's downstream configs)
        det=('configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py',
             'configs/downstream/mmdet/retinanet_r18-w16_fpn_12e_fashionscenes.py',
             'epoch_12.pth', 'coco/bbox_mAP'),
        seg=('configs/downstream/mmseg/fpn_r18-w16-ticket_1k_fashionscenes.py',
             'configs/downstream/mmseg/fpn_r18-w16_1k_fashionscenes.py',
             'iter_1000.pth', 'mIoU')))
SCENES_DATA = dict(probe64=(SCENES64_ROOT, SCENES64_ARGS),
                   full=('data/fashion_scenes', ['--out-dir', 'data/fashion_scenes']))

UNSTRUCTURED = ('recprune', 'imp', 'random', 'magnitude', 'nm', 'onthefly', 'magnitude_scratch',
                'rotnet', 'supervised_scratch')
STRUCTURED = ('psap', 'l1_uniform', 'l1_global', 'random_uniform')
# each method's paired comparison: what it must beat
# (on-the-fly and the self-supervised tickets train their own network from scratch on fewer
# images, so their baselines are pruned from networks trained the same way, not from the dense
# checkpoint the other rows start from)
BASELINES = dict(recprune='imp', imp='random', magnitude='random', nm='magnitude',
                 onthefly='magnitude_scratch',
                 rotnet='supervised_scratch', psap='l1_uniform', l1_uniform='random_uniform',
                 l1_global='l1_uniform', random='dense', random_uniform='dense')

# The sizes: ``default`` fits 90 minutes on 2 CPU cores; ``faithful`` is the embedded default at
# full size (every training image, the configs' own lengths; a GPU machine); ``smoke`` checks the
# plumbing in a few minutes.
SCALES = dict(
    smoke=dict(lottery_images=256, lottery_lr=0.03, prune_images=256, rounds=[1, 2],
               flops=[0.5], decoder_epochs=1, structured_epochs=4, onthefly_images=256,
               onthefly_epochs=2, retrain_images=256, retrain_epochs=2, probe_images=256,
               probe_epochs=1, val_images=256, scenes='probe64'),
    default=dict(lottery_images=10000, lottery_lr=0.03, prune_images=5000, rounds=[7, 11, 14],
                 flops=[0.5, 0.75], decoder_epochs=3, structured_epochs=4,
                 onthefly_images=5000, onthefly_epochs=6, retrain_images=5000,
                 retrain_epochs=3, probe_images=5000, probe_epochs=3, val_images=2000,
                 scenes='probe64'),
    faithful=dict(lottery_images=60000, lottery_lr=0.03, prune_images=60000,
                  rounds=[7, 11, 14, 18], flops=[0.5, 0.7, 0.75], decoder_epochs=3,
                  structured_epochs=4, onthefly_images=60000, onthefly_epochs=6,
                  retrain_images=60000, retrain_epochs=6, probe_images=60000, probe_epochs=3,
                  val_images=10000, scenes='full'),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/leaderboard')
    parser.add_argument('--scale', choices=sorted(SCALES), default='default',
                        help='sizes of every run (see SCALES); single knobs: --set KEY=VALUE')
    parser.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE',
                        help='override one size of the scale (a key of SCALES, not a config '
                             'key: config keys go to --cfg-options), e.g. prune_images=20000 '
                             'rounds=7,11 (lists comma-separated)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--methods', nargs='+', default=list(UNSTRUCTURED + STRUCTURED),
                        choices=UNSTRUCTURED + STRUCTURED)
    parser.add_argument('--pretrained',
                        default='work_dirs/embedded_default/pretrain/epoch_6.pth',
                        help='dense classifier checkpoint (trained first if missing)')
    parser.add_argument('--prune-options', nargs='*', default=[],
                        help='extra --cfg-options for the RecPrune and IMP runs only '
                             '(--cfg-options applies to every run)')
    parser.add_argument('--selfsup-dir', default='work_dirs/bench_selfsup',
                        help="bench_selfsup.py's work dir: the rotnet tickets are read from it")
    parser.add_argument('--scenes-levels', type=float, nargs='*', default=[],
                        help='levels (sparsity or FLOPs removed, in %%) whose tickets also get '
                             'the scenes probes, fine-tuned and frozen (~12 min of one worker '
                             'per ticket and seed)')
    parser.add_argument('--scenes-seeds', type=int, nargs='*', default=None,
                        help='seeds of the scenes probes (default: --seeds)')
    parser.add_argument('--scenes-methods', nargs='*', default=None,
                        choices=UNSTRUCTURED + STRUCTURED + ('dense', ),
                        help='methods whose tickets get the scenes probes, and dense for the '
                             'dense reference (default: --methods and dense)')
    parser.add_argument('--scenes-modes', nargs='+', default=['finetuned', 'frozen'],
                        choices=['finetuned', 'frozen'])
    parser.add_argument('--latency-repeats', type=int, default=30)
    parser.add_argument('--jobs', type=int, default=2, help='runs at once, one thread each')
    add_cfg_options(parser)
    parser.add_argument('--dry-run', action='store_true',
                        help='print the commands of every stage still to run; run nothing')
    parser.add_argument('--report-only', action='store_true',
                        help='run nothing; tabulate what has finished')
    args = parser.parse_args(argv)
    args.size = resolve_scale(args.scale, args.set)
    if args.scenes_seeds is None:
        args.scenes_seeds = args.seeds
    if args.scenes_methods is None:
        args.scenes_methods = [*args.methods, 'dense']
    return args


def resolve_scale(scale, overrides):
    """The sizes of ``scale`` with ``KEY=VALUE`` overrides (unknown keys are refused)."""
    size = dict(SCALES[scale])
    for item in overrides:
        key, sep, value = item.partition('=')
        if not sep or key not in size or (key == 'scenes' and value not in SCENES):
            raise cli.CLIError(f'--set {item!r}: expected KEY=VALUE with KEY one of '
                               f'{sorted(size)} (scenes: one of {sorted(SCENES)})')
        size[key] = [type(size[key][0])(v) for v in value.split(',')] \
            if isinstance(size[key], list) else type(size[key])(value)  # scenes: probe64 | full
    for key in ('retrain_epochs', 'onthefly_epochs'):  # a warm-up epoch, then the cosine
        if size[key] < 2:
            raise cli.CLIError(f'--set {key}={size[key]}: these runs warm up for one epoch '
                               'and then decay; give them at least 2 epochs')
    if size['structured_epochs'] < 4:  # the configs' 3 pruning steps at epochs 0, 1, 2
        raise cli.CLIError(f'--set structured_epochs={size["structured_epochs"]}: the '
                           'structured configs prune at epochs 0, 1 and 2; give them at least 4 '
                           'epochs')
    return size


def sparsity_of(rounds):
    return 100 * (1 - 0.8 ** rounds)


def fraction_of(rounds, digits=4):
    """The fraction of weights ``rounds`` rounds of 20 % prune, as the runs are given it."""
    return round(1 - 0.8 ** rounds, digits)


def onthefly_ticket(args, seed, rounds):
    return osp.join(seed_dir(args, seed), f'onthefly_r{rounds}', 'tickets',
                    f'onthefly_p{round(100 * fraction_of(rounds))}.pth')


def level_key(kind, value):
    """Levels as printed: unstructured sparsity (%) from rounds, structured FLOPs removed (%)."""
    return round(sparsity_of(value) if kind == 'unstructured' else 100 * value, 1)


FAILED = []  # (stage, error) of runs that failed; the others go on, the table shows '-'


def tolerant(task):
    """``task`` returning None, with the failure recorded, when one of its runs fails."""
    def run():
        try:
            return task()
        except subprocess.CalledProcessError as err:
            FAILED.append(' '.join(err.cmd[:4]) + f' ... (exit {err.returncode})')
            print(f'[leaderboard] FAILED: {FAILED[-1]}; going on without it', flush=True)
            return None
    return run


# ---- producing the tickets -----------------------------------------------------------------

def data_options(images, val_images):
    return [f'train_dataloader.dataset.indices={images}',
            f'val_dataloader.dataset.indices={val_images}',
            f'test_dataloader.dataset.indices={val_images}']


def seed_dir(args, seed):
    return osp.join(args.work_dir, f'seed{seed}')


def lottery_run(pipe, args, method, seed, rounds, load_from, name, prune_ratio=None,
                config=None):
    """The IMP / RecPrune loop (``config``: another config of that loop, e.g. the 2:4 one) for
    ``rounds`` rounds of one epoch; tickets/round_<r>.pth."""
    size = args.size
    work = osp.join(seed_dir(args, seed), name)
    opts = ['--cfg-options', f'load_from={load_from}', f'randomness.seed={seed}',
            *data_options(size['lottery_images'], size['val_images']),
            f'optim_wrapper.optimizer.lr={size["lottery_lr"]}', f'custom_hooks.0.rounds={rounds}',
            f'train_cfg.max_epochs={rounds}',
            'default_hooks.checkpoint.max_keep_ckpts=1', *args.prune_options]
    if prune_ratio is not None:
        opts.append(f'custom_hooks.0.pruner.prune_ratio={prune_ratio}')
    out = osp.join(work, 'tickets', f'round_{rounds}.pth')
    pipe.run(f'prune/{name}/seed{seed}',
             [[sys.executable, 'tools/train.py', config or LOTTERY_CFGS[method], '--work-dir',
               work, *opts]], [out])
    return work


def decoder_run(pipe, args, seed):
    size = args.size
    work = osp.join(seed_dir(args, seed), 'decoder')
    ckpt = osp.join(work, f'epoch_{size["decoder_epochs"]}.pth')
    pipe.run(f'decoder/seed{seed}',
             [[sys.executable, 'tools/train.py', DECODER_CFG, '--work-dir', work,
               '--cfg-options', f'load_from={args.pretrained}', f'randomness.seed={seed}',
               *data_options(size['lottery_images'], size['val_images']),
               f'train_cfg.max_epochs={size["decoder_epochs"]}',
               *probe_schedule(size['decoder_epochs'])]], [ckpt])
    return ckpt


def onthefly_run(pipe, args, seed, rounds):
    size = args.size
    sparsity = fraction_of(rounds)
    work = osp.join(seed_dir(args, seed), f'onthefly_r{rounds}')
    iters = math.ceil(size['onthefly_images'] / 128)
    epochs = size['onthefly_epochs']
    opts = ['--cfg-options', f'randomness.seed={seed}', f'sparsity={sparsity}',
            f'custom_hooks.0.pruner.sparsity={sparsity}',
            f'custom_hooks.0.pruner.warmup_iters={iters}',
            # zeros in the pruned entries, as every other unstructured ticket here: the
            # sign-keeping recovery keeps a bit per pruned entry (configs/onthefly/README.md)
            'custom_hooks.0.pruner.recovery=zero',
            *data_options(size['onthefly_images'], size['val_images']),
            f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'param_scheduler.1.T_max={max(1, epochs - 1)}', f'param_scheduler.1.end={epochs}',
            'default_hooks.checkpoint.max_keep_ckpts=1']
    out = onthefly_ticket(args, seed, rounds)
    pipe.run(f'prune/onthefly_r{rounds}/seed{seed}',
             [[sys.executable, 'tools/train.py', ONTHEFLY_CFG, '--work-dir', work, *opts]],
             [out])
    return out


def scratch_dense_run(pipe, args, seed):
    """An ordinary dense network trained as ``onthefly`` trains its own (same images, epochs
    and seed, plain convs, no penalty): what one-shot magnitude pruning starts from in the
    like-for-like comparison with on-the-fly pruning."""
    size = args.size
    work = osp.join(seed_dir(args, seed), 'dense_scratch')
    epochs = size['onthefly_epochs']
    ckpt = osp.join(work, f'epoch_{epochs}.pth')
    pipe.run(f'dense_scratch/seed{seed}',
             [[sys.executable, 'tools/train.py', PRETRAIN_CFG, '--work-dir', work,
               '--cfg-options', f'randomness.seed={seed}',
               *data_options(size['onthefly_images'], size['val_images']),
               f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
               f'param_scheduler.1.T_max={max(1, epochs - 1)}',
               f'param_scheduler.1.end={epochs}', 'default_hooks.checkpoint.max_keep_ckpts=1']],
             [ckpt])
    return ckpt


def magnitude_scratch_run(pipe, args, seed, rounds, ckpt):
    """One-shot magnitude pruning of ``ckpt`` with on-the-fly's cut (every layer, first conv
    kept, zeros), no fine-tuning: ``tools/prune_on_the_fly.py``."""
    sparsity = fraction_of(rounds)
    work = osp.join(seed_dir(args, seed), f'magnitude_scratch_r{rounds}')
    out = osp.join(work, 'ticket.pth')
    pipe.run(f'prune/magnitude_scratch_r{rounds}/seed{seed}',
             [[sys.executable, 'tools/prune_on_the_fly.py', PRETRAIN_CFG, ckpt,
               '--sparsity', str(sparsity), '--recovery', 'zero', '--out', out, '--force',
               '--work-dir', work, '--cfg-options',
               f'test_dataloader.dataset.indices={args.size["val_images"]}']], [out])
    return out


def structured_run(pipe, args, method, seed, fraction):
    size = args.size
    name = f'{method}_f{round(100 * fraction)}'
    work = osp.join(seed_dir(args, seed), name)
    epochs = size['structured_epochs']
    opts = ['--cfg-options', f'load_from={args.pretrained}', f'randomness.seed={seed}',
            f'custom_hooks.0.pruner.target.flops={fraction}',
            *data_options(size['prune_images'], size['val_images']),
            f'train_cfg.max_epochs={epochs}', f'param_scheduler.0.T_max={epochs}',
            f'param_scheduler.0.end={epochs}', 'default_hooks.checkpoint.max_keep_ckpts=1']
    if method == 'random_uniform':
        opts.append(f'custom_hooks.0.pruner.importance.seed={seed}')
    out = osp.join(work, 'tickets', 'slim.pth')
    pipe.run(f'prune/{name}/seed{seed}',
             [[sys.executable, 'tools/train.py', STRUCTURED_CFGS[method], '--work-dir', work,
               *opts]], [out])
    return out


def ticket_tasks(pipe, args, seed):
    """``(tasks, entries)``: the pruning runs of one seed (callables, longest first) and every
    ``(method, kind, level, seed) -> (ticket, extra backbone options)`` they produce."""
    methods, size = set(args.methods), args.size
    rounds, last = size['rounds'], max(size['rounds'])
    tasks, entries = [], {}
    root = seed_dir(args, seed)
    if 'recprune' in methods:
        def recprune():
            decoder = decoder_run(pipe, args, seed)
            lottery_run(pipe, args, 'recprune', seed, last, decoder, 'recprune')
        tasks.append(recprune)
    if methods & {'imp', 'random'}:
        tasks.append(lambda: lottery_run(pipe, args, 'imp', seed, last, args.pretrained, 'imp'))
    for r in rounds:
        def ticket(name, r=r):
            return osp.join(root, name, 'tickets', f'round_{r}.pth')
        key = ('unstructured', level_key('unstructured', r), seed)
        if 'recprune' in methods:
            entries[('recprune', *key)] = (ticket('recprune'), [])
        if 'imp' in methods:
            entries[('imp', *key)] = (ticket('imp'), [])
        if 'random' in methods:
            entries[('random', *key)] = (ticket('imp'), ['model.backbone.masks=random',
                                                         f'model.backbone.seed={seed}'])
        if 'magnitude' in methods:
            ratio = fraction_of(r, digits=6)
            tasks.append(lambda r=r, ratio=ratio: lottery_run(
                pipe, args, 'imp', seed, 1, args.pretrained, f'magnitude_r{r}', ratio))
            entries[('magnitude', *key)] = (osp.join(root, f'magnitude_r{r}', 'tickets',
                                                     'round_1.pth'), [])
        if 'onthefly' in methods:
            tasks.append(lambda r=r: onthefly_run(pipe, args, seed, r))
            entries[('onthefly', *key)] = (onthefly_ticket(args, seed, r), [])
        if 'magnitude_scratch' in methods:
            out = osp.join(root, f'magnitude_scratch_r{r}', 'ticket.pth')
            tasks.append(lambda r=r: magnitude_scratch_run(
                pipe, args, seed, r, scratch_dense_run(pipe, args, seed)))
            entries[('magnitude_scratch', *key)] = (out, [])
        for method, run in (('rotnet', 'prune_rotnet'), ('supervised_scratch',
                                                         'prune_supervised')):
            path = osp.join(args.selfsup_dir, f'seed{seed}', run, 'tickets', f'round_{r}.pth')
            if method in methods and osp.isfile(path):  # bench_selfsup.py's tickets
                entries[(method, *key)] = (path, [])
    if 'nm' in methods:  # 2:4 (50 %) against magnitude at 50 %: one round of the same loop
        key = ('unstructured', NM_LEVEL, seed)
        tasks.append(lambda: lottery_run(pipe, args, 'imp', seed, 1, args.pretrained, 'nm_r1',
                                         config=NM_CFG))
        entries[('nm', *key)] = (osp.join(root, 'nm_r1', 'tickets', 'round_1.pth'), [])
        if 'magnitude' in methods:
            tasks.append(lambda: lottery_run(pipe, args, 'imp', seed, 1, args.pretrained,
                                             'magnitude_s50', NM_LEVEL / 100))
            entries[('magnitude', *key)] = (osp.join(root, 'magnitude_s50', 'tickets',
                                                     'round_1.pth'), [])
    for method in STRUCTURED:
        if method not in methods:
            continue
        for f in size['flops']:
            tasks.append(lambda m=method, f=f: structured_run(pipe, args, m, seed, f))
            name = f'{method}_f{round(100 * f)}'
            entries[(method, 'structured', level_key('structured', f), seed)] = (
                osp.join(root, name, 'tickets', 'slim.pth'), [])
    return tasks, entries


# ---- scoring --------------------------------------------------------------------------------

def score_run(pipe, args, name, config, work, options, epochs, images, metric='accuracy/top1'):
    """Train ``config`` for ``epochs`` on ``images`` and test: ``metric`` in % (None if not
    run)."""
    size = args.size
    opts = ['--cfg-options', *data_options(images, size['val_images']),
            f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}', *options]
    record = train_and_test(pipe, name, config, work, f'epoch_{epochs}.pth',
                            extra=opts)
    return None if record is None else record['metrics'][metric]


def retrain_schedule(epochs):
    """The re-training config's warm-up epoch + cosine fitted to ``epochs``."""
    return [f'param_scheduler.1.T_max={max(1, epochs - 1)}', f'param_scheduler.1.end={epochs}']


def probe_schedule(epochs):
    return [f'param_scheduler.0.T_max={epochs}', f'param_scheduler.0.end={epochs}']


def cell_tasks(pipe, args, key, ticket, extra):
    """The score runs of one ticket: ``[(metric name, callable)]``."""
    method, kind, level, seed = key
    size = args.size
    work = osp.join(seed_dir(args, seed), 'scores', f'{method}_{level:g}')
    stage = f'{method}/{level:g}/seed{seed}'
    backbone = [f'model.backbone.ticket={ticket}', *extra, f'randomness.seed={seed}']
    tasks = [
        ('top1', lambda: score_run(
            pipe, args, f'retrain/{stage}', RETRAIN_CFG, osp.join(work, 'retrain'),
            [*backbone, *retrain_schedule(size['retrain_epochs'])], size['retrain_epochs'],
            size['retrain_images'])),
        ('probe', lambda: score_run(
            pipe, args, f'probe/{stage}', PROBE_CFG, osp.join(work, 'probe'),
            [*backbone, *probe_schedule(size['probe_epochs'])], size['probe_epochs'],
            size['probe_images'])),
    ]
    if (level in args.scenes_levels and seed in args.scenes_seeds
            and method in args.scenes_methods):
        tasks += scenes_tasks(pipe, args, stage, work, backbone, dense=False)
    return tasks


def scenes_tasks(pipe, args, stage, work, options, dense):
    tasks = []
    for task, (ticket_cfg, dense_cfg, last, metric) in SCENES[args.size['scenes']].items():
        for mode in args.scenes_modes:
            frozen = mode == 'frozen'
            tag = f'{task}_{mode}'

            def run(task=task, tag=tag, cfg=dense_cfg if dense else ticket_cfg, last=last,
                    metric=metric, frozen=frozen):
                record = train_and_test(pipe, f'{tag}/{stage}', cfg, osp.join(work, tag), last,
                                        extra=['--cfg-options', *options,
                                               *(FROZEN if frozen else [])])
                if record is None:
                    return None
                value = record['metrics'][metric]
                return 100 * value if task == 'det' else value
            tasks.append((tag, run))
    return tasks


def dense_tasks(pipe, args, seed):
    """The dense reference: its top-1 as pretrained, its linear probe, its scenes probes."""
    size = args.size
    work = osp.join(seed_dir(args, seed), 'scores', 'dense')
    metrics = osp.join(work, 'test_metrics.json')

    def top1():
        record = pipe.run(f'test/dense/seed{seed}',
                          [[sys.executable, 'tools/test.py', PRETRAIN_CFG, args.pretrained,
                            '--work-dir', work, '--out-json', metrics, '--force', '--cfg-options',
                            f'test_dataloader.dataset.indices={size["val_images"]}']],
                          [metrics], lambda: read_json(metrics))
        return None if record is None else record['metrics']['accuracy/top1']
    init = f'model.backbone.init_cfg.checkpoint={args.pretrained}'
    tasks = [('top1', top1),
             ('probe', lambda: score_run(
                 pipe, args, f'probe/dense/seed{seed}', DENSE_PROBE_CFG,
                 osp.join(work, 'probe'), [init, f'randomness.seed={seed}',
                                           *probe_schedule(size['probe_epochs'])],
                 size['probe_epochs'], size['probe_images']))]
    if args.scenes_levels and seed in args.scenes_seeds and 'dense' in args.scenes_methods:
        tasks += scenes_tasks(pipe, args, f'dense/seed{seed}', work,
                              [init, f'randomness.seed={seed}'], dense=True)
    return tasks


def ticket_costs(ticket_path, input_shape=(1, 3, 56, 56)):
    """``(kept params %, kept FLOPs %)`` of a ticket's backbone against its dense backbone
    (unstructured and 2:4: non-zero weights; their FLOPs stay dense on ordinary hardware)."""
    from mmrecprune.sparsity import count_flops_params
    from analyze_ticket import load_models
    dense, pruned, ticket = load_models(ticket_path)
    dense_flops, dense_params = count_flops_params(dense, input_shape)
    if ticket.masks:  # unstructured and nm: the masks count (on-the-fly fills are not zeros)
        pruned_entries = sum(int((~m).sum()) for m in ticket.masks.values())
        return 100 * (dense_params - pruned_entries) / dense_params, 100.0
    flops, params = count_flops_params(pruned, input_shape)
    return 100 * params / dense_params, 100 * flops / dense_flops


def latency_ratio(ticket_path, repeats, batch=8):
    """Dense / slim latency, eager, batch ``batch`` at 56x56, one thread, interleaved."""
    import torch

    from mmrecprune.analysis.latency import interleaved_latency
    from analyze_ticket import load_models
    torch.set_num_threads(1)
    dense, pruned, _ = load_models(ticket_path)
    dense.eval()
    pruned.eval()
    lat = interleaved_latency(dict(dense=dense, slim=pruned), (batch, 3, 56, 56),
                              repeats=repeats, warmup=3)
    return lat['dense'] / lat['slim']


# ---- the table ------------------------------------------------------------------------------

COLUMNS = ('top1', 'probe', 'det_finetuned', 'det_frozen', 'seg_finetuned', 'seg_frozen')
TITLES = dict(top1='top-1 re-trained', probe='linear probe', det_finetuned='det mAP',
              det_frozen='det mAP frozen', seg_finetuned='seg mIoU',
              seg_frozen='seg mIoU frozen')


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0,
            len(values))


def paired(cells, method, baseline, kind, level, metric):
    """Per-seed differences ``method - baseline`` at one level: (mean, std, n, wins)."""
    a = cells.get((method, kind, level), {}).get(metric, {})
    b = cells.get((baseline, kind, level) if baseline != 'dense' else ('dense', 'dense', 0.0),
                  {}).get(metric, {})
    diffs = [a[s] - b[s] for s in a if s in b and a[s] is not None and b[s] is not None]
    if not diffs:
        return None
    return (statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            len(diffs), sum(d > 0 for d in diffs))


def fmt(ms, digits=2):
    if ms is None:
        return '-'
    mean, std, n = ms
    return f'{mean:.{digits}f} +- {std:.{digits}f}' if n > 1 else f'{mean:.{digits}f} (1 seed)'


def fmt_paired(p):
    if p is None:
        return '-'
    mean, std, n, wins = p
    return f'{mean:+.2f} +- {std:.2f} ({wins}/{n})'


SAME_START = ('recprune', 'random', 'magnitude')  # pruned from the dense checkpoint IMP prunes


def mask_jaccards(entries):
    """``{(method, kind, level): [Jaccard of its kept weights with IMP's, per seed]}`` for the
    tickets pruned from the same dense network as IMP's (``random``: the masks PrunedBackbone
    draws for it); the others prune networks of their own, whose masks IMP's cannot share."""
    from mmrecprune.sparsity import mask_overlap, random_masks_like
    from mmrecprune.tickets import load_ticket
    out = {}
    for (method, kind, level, seed), (ticket, extra) in entries.items():
        imp = entries.get(('imp', kind, level, seed))
        if (method not in SAME_START or imp is None
                or not osp.isfile(ticket) or not osp.isfile(imp[0])):
            continue
        imp_masks = load_ticket(imp[0]).masks
        masks = (random_masks_like(load_ticket(ticket).masks, seed) if method == 'random'
                 else load_ticket(ticket).masks)
        if set(masks) != set(imp_masks):  # another model (on-the-fly: first conv kept, ...)
            masks = {k: v for k, v in masks.items() if k in imp_masks}
            imp_masks = {k: v for k, v in imp_masks.items() if k in masks}
        out.setdefault((method, kind, level), []).append(
            mask_overlap(masks, imp_masks)['jaccard'])
    return out


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


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
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
                pts.sort()
                ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts],
                            yerr=[p[1][1] for p in pts], marker='o', capsize=3,
                            ls='--' if method.startswith('random') else '-',
                            color=plt.cm.tab10(i), label=method)
            if dense and dense[metric]:
                ax.axhline(dense[metric][0], color='k', ls=':', label='dense')
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f'{TITLES[metric]} (%)')
            ax.set_title(f'{kind}: {TITLES[metric]}')
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle('Leaderboard on the embedded default (mean +- std over seeds)')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    costs, latency = {}, {}
    if not args.dry_run:
        for (method, kind, level, seed), (ticket, _) in entries.items():
            if seed == args.seeds[0] and osp.isfile(ticket):
                costs[(method, kind, level)] = ticket_costs(ticket)
        # timed last, alone in this benchmark (the workers are done)
        for (method, kind, level, seed), (ticket, _) in entries.items():
            if kind == 'structured' and seed == args.seeds[0] and osp.isfile(ticket):
                latency[(method, kind, level)] = latency_ratio(ticket, args.latency_repeats)
    rows = build_rows(cells, costs, latency, {} if args.dry_run else mask_jaccards(entries))
    columns = [c for c in COLUMNS if any(r[c] for r in rows)] or ['top1', 'probe']
    table = markdown(rows, columns)
    for metric in columns:  # the compact views the README quotes
        table += f'\n\n**{TITLES[metric]}** (mean; paired difference vs baseline)\n\n'
        table += pivot(rows, metric)
    wall = time.time() - start
    note = (f'\n\nScale {args.scale!r} ({json.dumps(args.size)}), seeds {args.seeds}; mean +- '
            f'std over seeds; "vs baseline": mean +- std of the per-seed differences (same '
            f'seed, same level) and the seeds where the method is higher. Params / FLOPs kept '
            f'and CPU speed-up (dense / slim, eager, batch 8, 56x56, 1 thread) from seed '
            f'{args.seeds[0]}\'s tickets. Wall time of this invocation {wall / 60:.1f} min with '
            f'{args.jobs} workers.')
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


if __name__ == '__main__':
    cli.run_tool(main)
