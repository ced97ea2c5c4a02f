"""The on-the-fly benchmark's stages (``tools/benchmarks/bench_onthefly.py``): training the
dense, hyperspherical and on-the-fly networks, cutting and scoring them with
``tools/prune_on_the_fly.py``, the penalty sweep, the MobileNetV2 part and the downstream
probes; every one a stage of a :class:`~mmrecprune.benchmarks.stage_runner.Pipeline`."""
import os.path as osp
import sys

from .probe import SCENES64_ARGS, SCENES64_ROOT, probe_downstream
from .stage_runner import read_json, run_parallel

DENSE_CFG = 'configs/pretrain/resnet18-w16_1xb128-6e_fashionmnist.py'
OTF_CFG = 'configs/onthefly/onthefly_r18-w16_1xb128-6e_fashionmnist.py'
MBV2_DENSE_CFG = 'configs/onthefly/mobilenetv2-w0.5_1xb128-6e_fashionmnist.py'
MBV2_OTF_CFG = 'configs/onthefly/onthefly_mobilenetv2-w0.5_1xb128-6e_fashionmnist.py'
MBV2_FINETUNE_CFG = 'configs/onthefly/finetune_mobilenetv2-w0.5-ticket_fashionmnist.py'
MBV2_IMP_CFG = 'configs/onthefly/imp_mobilenetv2-w0.5_6r-1e_fashionmnist.py'
RECOVERIES = ['zero', 'layer_mean', 'filter_mean', 'layer_abs_signed', 'filter_abs_signed']
HELD_OUT = (55000, 56000)  # training images scored by the penalty sweep


def data_options(args, seed):
    return [f'randomness.seed={seed}', f'train_dataloader.dataset.indices={args.subset}',
            f'val_dataloader.dataset.indices={args.val_subset}',
            f'test_dataloader.dataset.indices={args.val_subset}']


def schedule_options(args):
    epochs = args.epochs
    return [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'param_scheduler.1.T_max={epochs - 1}', f'param_scheduler.1.end={epochs}',
            'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=1',
            'default_hooks.checkpoint.save_best=None']


def iters_per_epoch(args):
    return -(-args.subset // 128)


def train(pipe, args, name, config, work, options):
    ckpt = osp.join(work, f'epoch_{args.epochs}.pth')
    pipe.run(name, [[sys.executable, 'tools/train.py', config, '--work-dir', work,
                     '--cfg-options', *options]], [ckpt])
    return ckpt


def otf_options(args, sparsity, penalty):
    return [f'custom_hooks.0.pruner.sparsity={sparsity}',
            f'custom_hooks.0.pruner.penalty={penalty}',
            f'custom_hooks.0.pruner.warmup_iters={iters_per_epoch(args)}',
            'custom_hooks.0.evaluate=False']


def score(pipe, args, name, config, ckpt, work, sparsity, options, recoveries=RECOVERIES,
          bn=True, out=None):
    metrics = osp.join(work, 'scores.json')
    cmd = [sys.executable, 'tools/prune_on_the_fly.py', config, ckpt, '--sparsity',
           str(sparsity), '--recovery', *recoveries, '--out-json', metrics, '--work-dir', work,
           '--out', out or osp.join(work, 'ticket.pth'), '--force']  # the stage's own files
    if bn:
        cmd += ['--bn-recalibration-images', str(args.bn_images)]
    if options:
        cmd += ['--cfg-options', *options]
    record = pipe.run(name, [cmd], [metrics],
                      lambda: read_json(metrics))
    return None if record is None else record['metrics']['rows']


def sweep(pipe, args):
    """The penalty coefficient: best recovered top-1 at p = 50 % on held-out training images."""
    if args.penalty is not None or not args.sweep:
        return args.penalty if args.penalty is not None else 1.0
    held_out = osp.join(args.work_dir, 'held_out_val.py')
    with open(held_out, 'w') as f:  # the validation loader reads held-out *training* images
        f.write(f"_base_ = '{osp.abspath(OTF_CFG)}'\n"
                f"val_dataloader = dict(dataset=dict(split='train', "
                f"indices=list(range{HELD_OUT})))\ntest_dataloader = val_dataloader\n")
    def one(penalty):
        work = osp.join(args.work_dir, 'sweep', f'penalty{penalty:g}')
        opts = ['randomness.seed=100', f'train_dataloader.dataset.indices={args.subset}',
                *schedule_options(args), *otf_options(args, 0.5, penalty)]
        ckpt = train(pipe, args, f'sweep/penalty{penalty:g}', held_out, work, opts)
        return score(pipe, args, f'sweep/penalty{penalty:g}/score', held_out, ckpt, work, 0.5,
                     [], recoveries=['zero', 'filter_abs_signed'], bn=False)

    found = dict(zip(args.sweep, run_parallel([lambda p=p: one(p) for p in args.sweep],
                                              args.jobs)))
    results = {p: rows for p, rows in found.items() if rows}
    if not results:
        return None
    best = max(results, key=lambda p: results[p]['filter_abs_signed']['accuracy/top1'])
    lines = ['| penalty | dense | pruned 50 % (zero) | recovered (filter_abs_signed) |',
             '|---|---|---|---|']
    for p, rows in sorted(results.items()):
        lines.append(f'| {p:g}{" (chosen)" if p == best else ""} | '
                     + ' | '.join(f'{rows[r]["accuracy/top1"]:.2f}'
                                  for r in ('dense', 'zero', 'filter_abs_signed')) + ' |')
    with open(osp.join(args.work_dir, 'sweep.md'), 'w') as f:
        f.write('\n'.join(lines) + f'\n\ntop-1 (%) on training images {HELD_OUT[0]}-'
                f'{HELD_OUT[1] - 1} (held out), seed 100.\n')
    print('\n'.join(lines))
    return best


def level_tag(p):
    return f'p{round(100 * p)}'


def mobilenet(pipe, args, penalty):
    """MobileNetV2 at 70 % (first conv excluded): on-the-fly (every penalty) vs magnitude, no
    fine-tuning and after a short fine-tune with the mask kept; IMP to 70 % with the same
    fine-tune (its own 6 epochs of pruning rounds come first)."""
    def one_seed(seed):
        runs = {}
        root = osp.join(args.work_dir, f'seed{seed}', 'mbv2')
        opts = data_options(args, seed)
        sched = schedule_options(args)
        dense = train(pipe, args, f'mbv2/dense/seed{seed}', MBV2_DENSE_CFG,
                      osp.join(root, 'dense'), opts + sched)
        # the baseline with zeros (conventional) and with on-the-fly's recovery (like for like)
        models = [('magnitude', MBV2_DENSE_CFG, dense, 'zero'),
                  ('magnitude_recovered', MBV2_DENSE_CFG, dense, 'filter_abs_signed')]
        for name, c in [('onthefly', penalty)] + [(f'onthefly_pen{c:g}', c)
                                                   for c in args.extra_penalties]:
            ckpt = train(pipe, args, f'mbv2/{name}/seed{seed}', MBV2_OTF_CFG,
                         osp.join(root, name), opts + sched + otf_options(args, 0.7, c))
            models.append((name, MBV2_OTF_CFG, ckpt, 'filter_abs_signed'))
        for model, cfg, ckpt, recovery in models:
            work = osp.join(root, f'{model}_p70')
            ticket = osp.join(work, 'ticket.pth')
            rows = score(pipe, args, f'mbv2/{model}/p70/seed{seed}', cfg, ckpt, work, 0.7, opts,
                         recoveries=['zero', recovery] if recovery != 'zero' else ['zero'],
                         bn=False, out=ticket)
            ft = osp.join(root, f'{model}_p70_finetune')
            epochs = args.mbv2_finetune_epochs
            metrics = osp.join(ft, 'test_metrics.json')
            ft_opts = ['--cfg-options', f'model.backbone.ticket={ticket}', *opts,
                       f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}']
            rec = pipe.run(f'mbv2/{model}/p70/finetune/seed{seed}', [
                [sys.executable, 'tools/train.py', MBV2_FINETUNE_CFG, '--work-dir', ft,
                 *ft_opts],
                [sys.executable, 'tools/test.py', MBV2_FINETUNE_CFG,
                 osp.join(ft, f'epoch_{epochs}.pth'), '--work-dir', ft, '--out-json', metrics,
                 '--force', *ft_opts]], [metrics], lambda m=metrics: read_json(m))
            # the same cut scored with BN recalibration too (its own stage: the fine-tune above
            # starts from the ticket without it)
            with_bn = score(pipe, args, f'mbv2/{model}/p70/bn/seed{seed}', cfg, ckpt,
                            osp.join(root, f'{model}_p70_bn'), 0.7, opts,
                            recoveries=['zero', recovery] if recovery != 'zero' else ['zero'])
            if rows is None or rec is None or with_bn is None:
                continue
            runs[model] = dict(dense=rows['dense']['accuracy/top1'],
                               pruned=rows[recovery]['accuracy/top1'],
                               pruned_bn=with_bn[f'{recovery}+bn']['accuracy/top1'],
                               finetuned=rec['metrics']['accuracy/top1'])
        imp = imp_mobilenet(pipe, args, seed, root, dense, opts)
        if imp is not None:
            runs['imp'] = imp
        return runs

    return merge_seeds(args, one_seed)


def imp_mobilenet(pipe, args, seed, root, dense, opts):
    """IMP to 70 % from the dense checkpoint (6 rounds of 1 epoch), then the same fine-tune."""
    work = osp.join(root, 'imp_p70')
    ticket = osp.join(work, 'tickets', 'round_6.pth')
    pipe.run(f'mbv2/imp/p70/seed{seed}', [[sys.executable, 'tools/train.py', MBV2_IMP_CFG,
                                           '--work-dir', work, '--cfg-options',
                                           f'load_from={dense}', *opts]], [ticket])
    ft = osp.join(root, 'imp_p70_finetune')
    epochs = args.mbv2_finetune_epochs
    metrics = osp.join(ft, 'test_metrics.json')
    ft_opts = ['--cfg-options', f'model.backbone.ticket={ticket}', *opts,
               f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}']
    rec = pipe.run(f'mbv2/imp/p70/finetune/seed{seed}', [
        [sys.executable, 'tools/train.py', MBV2_FINETUNE_CFG, '--work-dir', ft, *ft_opts],
        [sys.executable, 'tools/test.py', MBV2_FINETUNE_CFG, osp.join(ft, f'epoch_{epochs}.pth'),
         '--work-dir', ft, '--out-json', metrics, '--force', *ft_opts]], [metrics],
        lambda: read_json(metrics))
    dense_top1 = pipe.results.get(f'mbv2/magnitude/p70/seed{seed}', {}).get('metrics')
    if rec is None or dense_top1 is None:
        return None
    dense_top1 = dense_top1['rows']['dense']['accuracy/top1']
    return dict(dense=dense_top1, pruned=None, pruned_bn=None,
                finetuned=rec['metrics']['accuracy/top1'])


def merge_seeds(args, one_seed):
    """Run ``one_seed(seed) -> {model: result}`` for every seed on the workers; return
    ``{model: [result per seed]}``."""
    out = {}
    for runs in run_parallel([lambda s=s: one_seed(s) for s in args.seeds], args.jobs):
        for model, result in runs.items():
            out.setdefault(model, []).append(result)
    return out


def probes(pipe, args, penalty, chosen):
    """Downstream probe on the 50 % tickets: on-the-fly (chosen recovery, every penalty) vs
    magnitude (zeros)."""
    pipe.run('scenes64', [[sys.executable, 'tools/dataset_converters/make_fashion_scenes.py',
                           *SCENES64_ARGS]],
             [osp.join(SCENES64_ROOT, 'annotations', 'instances_test.json')])
    def one_seed(seed):
        runs = {}
        root = osp.join(args.work_dir, f'seed{seed}')
        opts = data_options(args, seed)
        last = f'epoch_{args.epochs}.pth'
        models = [('magnitude', DENSE_CFG, osp.join(root, 'dense', last), 'zero'),
                  ('onthefly', OTF_CFG, osp.join(root, 'onthefly_p50', last), chosen)]
        models += [(f'onthefly_pen{c:g}', OTF_CFG,
                    osp.join(root, f'onthefly_pen{c:g}_p50', last), chosen)
                   for c in args.extra_penalties]
        for model, cfg, ckpt, recovery in models:
            work = osp.join(root, f'probe_{model}_p50')
            ticket = osp.join(work, 'ticket.pth')
            score(pipe, args, f'probe/{model}/p50/ticket/seed{seed}', cfg, ckpt, work, 0.5,
                  opts, recoveries=[recovery], bn=False, out=ticket)
            res = probe_downstream(pipe, f'{model}_p50', work, seed,
                                   f'model.backbone.ticket={ticket}')
            if res is not None:
                runs[model] = res
        return runs

    return merge_seeds(args, one_seed)
