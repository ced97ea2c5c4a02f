"""The leaderboard's pruning runs: every ticket of one seed, as ``tools/train.py`` /
``tools/prune_on_the_fly.py`` stages of a :class:`~mmrecprune.benchmarks.stage_runner.Pipeline`."""
import math
import os.path as osp
import subprocess
import sys

from mmrecprune.benchmarks.probe import DECODER_CFG, LOTTERY_CFGS, PRETRAIN_CFG

from .grid import (IMP_TAYLOR_CFG, NM_CFG, NM_LEVEL, ONTHEFLY_CFG, RECPRUNE_VARIANTS,
                   STRUCTURED, STRUCTURED_CFGS, data_options, fraction_of, level_key,
                   onthefly_ticket, seed_dir)
from .scores import probe_schedule

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


def lottery_run(pipe, args, method, seed, rounds, load_from, name, prune_ratio=None,
                config=None, options=()):
    """The IMP / RecPrune loop (``config``: another config of that loop, e.g. the 2:4 one;
    ``options``: more ``--cfg-options``) for ``rounds`` rounds of one epoch;
    tickets/round_<r>.pth."""
    size = args.size
    work = osp.join(seed_dir(args, seed), name)
    opts = ['--cfg-options', f'load_from={load_from}', f'randomness.seed={seed}',
            *data_options(size['lottery_images'], size['val_images']),
            f'optim_wrapper.optimizer.lr={size["lottery_lr"]}', f'custom_hooks.0.rounds={rounds}',
            f'train_cfg.max_epochs={rounds}',
            'default_hooks.checkpoint.max_keep_ckpts=1', *options, *args.prune_options]
    if prune_ratio is not None:
        opts.append(f'custom_hooks.0.pruner.prune_ratio={prune_ratio}')
    out = osp.join(work, 'tickets', f'round_{rounds}.pth')
    pipe.run(f'prune/{name}/seed{seed}',
             [[sys.executable, 'tools/train.py', config or LOTTERY_CFGS[method], '--work-dir',
               work, *opts]], [out])
    return work


def decoder_run(pipe, args, seed, name, options):
    size = args.size
    work = osp.join(seed_dir(args, seed), name)
    ckpt = osp.join(work, f'epoch_{size["decoder_epochs"]}.pth')
    pipe.run(f'{name}/seed{seed}',
             [[sys.executable, 'tools/train.py', DECODER_CFG, '--work-dir', work,
               '--cfg-options', f'load_from={args.pretrained}', f'randomness.seed={seed}',
               *data_options(size['lottery_images'], size['val_images']),
               f'train_cfg.max_epochs={size["decoder_epochs"]}',
               *probe_schedule(size['decoder_epochs']), *options]], [ckpt])
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
    for method, (decoder_name, options) in RECPRUNE_VARIANTS.items():
        if method in methods:  # each variant its own decoder stage, trained on its target
            def recprune(method=method, decoder_name=decoder_name, options=options):
                decoder = decoder_run(pipe, args, seed, decoder_name, options)
                lottery_run(pipe, args, 'recprune', seed, last, decoder, method, options=options)
            tasks.append(recprune)
    if methods & {'imp', 'random', 'imp_taylor'}:
        tasks.append(lambda: lottery_run(pipe, args, 'imp', seed, last, args.pretrained, 'imp'))
    if 'imp_taylor' in methods:  # IMP's loop, weights ranked by |w * dL/dw|
        tasks.append(lambda: lottery_run(pipe, args, 'imp', seed, last, args.pretrained,
                                         'imp_taylor', config=IMP_TAYLOR_CFG))
    for r in rounds:
        def ticket(name, r=r):
            return osp.join(root, name, 'tickets', f'round_{r}.pth')
        key = ('unstructured', level_key('unstructured', r), seed)
        for method in RECPRUNE_VARIANTS:
            if method in methods:
                entries[(method, *key)] = (ticket(method), [])
        # IMP's tickets are scored with Taylor IMP's: `--methods imp_taylor` alone gives the
        # paired comparison
        if methods & {'imp', 'imp_taylor'}:
            entries[('imp', *key)] = (ticket('imp'), [])
        if 'imp_taylor' in methods:
            entries[('imp_taylor', *key)] = (ticket('imp_taylor'), [])
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
        # its baseline runs with it: `--methods nm` alone gives the paired 2:4 comparison
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

