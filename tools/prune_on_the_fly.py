"""Prune a trained checkpoint once, with no fine-tuning, and score it.

Works on any classifier / detector / segmentor checkpoint of an OpenMMLab config: a
hyperspherical (on-the-fly) model is folded first (exact); an ordinary one gets one-shot
magnitude pruning. Prints the validation metrics before pruning, right after it (``zero``), with
every ``--recovery`` mode and, with ``--bn-recalibration-images``, after BN recalibration; writes
the ticket of the last recovery mode (with its fill values and, if asked, recalibrated BN).
CHECKPOINT may also be a torchvision-format state dict (``conv1.weight``, ``layer1.0...``,
``fc.*``): its keys are mapped as ``load_from`` maps them. An existing ``--out`` /
``--out-json`` is refused unless ``--force``; bad input stops with one line, before any work.

    python tools/prune_on_the_fly.py CONFIG CHECKPOINT --sparsity 0.5 \\
        --recovery zero filter_abs_signed --bn-recalibration-images 512 --out ticket.pth
"""
import argparse
import json
import os
import os.path as osp
import sys

from mmengine.config import DictAction

import mmrecprune  # noqa: F401  registries, safe checkpoint loading
from mmrecprune.cli import CLIError, check_output_path, check_work_dir, load_config, run_tool
from mmrecprune.sparsity import RECOVERY_MODES


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Prune a checkpoint once, no fine-tuning')
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='a checkpoint of that config (tools/train.py), or a '
                        'torchvision-format state dict (mapped as load_from maps it)')
    parser.add_argument('--sparsity', type=float,
                        help="fraction of every prunable layer pruned (default: the config's "
                             'pruner sparsity)')
    parser.add_argument('--recovery', nargs='+', choices=RECOVERY_MODES,
                        help="fill values to score; the last one is exported (default: 'zero' "
                             "and the config pruner's recovery)")
    parser.add_argument('--ranking', choices=('layerwise', 'global'), default='layerwise')
    parser.add_argument('--bn-recalibration-images', type=int, default=0,
                        help='training images that re-estimate BN statistics after pruning')
    parser.add_argument('--out', help='ticket file to write (default: '
                                      'WORK_DIR/tickets/oneshot_p<sparsity>_<recovery>.pth)')
    parser.add_argument('--out-json', help='write the table of metrics here')
    parser.add_argument('--force', action='store_true',
                        help='overwrite the --out ticket / --out-json file if it exists')
    parser.add_argument('--work-dir', help='work dir of the evaluation (logs)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy format')
    return parser.parse_args(argv)


def pruner_settings(cfg, args):
    """Sparsity, recoveries, include / exclude, FLOPs input shape: the command line over the
    config's pruning hook."""
    pruner, shape = {}, (1, 3, 224, 224)
    for hook in cfg.get('custom_hooks') or []:
        if isinstance(hook.get('pruner'), dict):
            pruner = hook['pruner']
            shape = tuple(hook.get('example_input_shape', shape))
    sparsity = args.sparsity if args.sparsity is not None else pruner.get('sparsity')
    if sparsity is None:
        raise CLIError('give --sparsity (the config has no pruner with a sparsity)')
    if not 0 < sparsity < 1:
        raise CLIError(f'--sparsity must be a fraction in (0, 1), got {sparsity}')
    recoveries = args.recovery or list(dict.fromkeys(['zero', pruner.get('recovery', 'zero')]))
    # pattern: an N:M config's cut (configs/nm) is N:M here too
    options = {k: pruner[k] for k in ('include', 'exclude', 'pattern') if k in pruner}
    return sparsity, recoveries, options, shape


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    sparsity, recoveries, options, input_shape = pruner_settings(cfg, args)
    cfg.work_dir = check_work_dir(args.work_dir) or osp.join(
        'work_dirs', 'prune_on_the_fly', osp.splitext(osp.basename(args.config))[0])
    from mmrecprune.analysis import (load_exact_weights, offline_runner,
                                     read_training_checkpoint, recalibrate_bn, score_pruning,
                                     validation_scorer)
    try:
        checkpoint = read_training_checkpoint(args.checkpoint)
    except ValueError as err:
        raise CLIError(str(err)) from None
    if args.out:
        check_output_path(args.out, args.force, '--out')
        out = args.out
    else:  # the work dir's own file, named by the settings: a rerun replaces it
        out = osp.join(cfg.work_dir, 'tickets',
                       f'oneshot_p{round(100 * sparsity)}_{recoveries[-1]}.pth')
        check_output_path(out, True, 'the ticket')
    check_output_path(args.out_json, args.force, '--out-json')
    from mmrecprune.methods import OneShotMagnitudePruner
    from mmrecprune.sparsity import strip_conv_cfg
    from mmrecprune.tickets import export_ticket

    runner = offline_runner(cfg)
    model = runner.model
    try:
        load_exact_weights(model, args.checkpoint, checkpoint)
    except ValueError as err:
        raise CLIError(str(err)) from None
    pruner = OneShotMagnitudePruner(sparsity=sparsity, recovery=recoveries[-1],
                                    ranking=args.ranking, **options)
    pruner.attach(model)
    recalibrate = None
    if args.bn_recalibration_images:
        train_loader = runner.build_dataloader(cfg.train_dataloader)
        recalibrate = lambda: recalibrate_bn(  # noqa: E731
            model, train_loader, args.bn_recalibration_images)
    rows = score_pruning(pruner, validation_scorer(runner, cfg), recoveries, recalibrate)
    keys = list(rows['dense'])
    width = max(len(r) for r in rows)
    print(f'\none-shot pruning of {args.checkpoint}: {sparsity:.0%} of every prunable layer '
          f'({len(pruner.params)} tensors, ranking {args.ranking}), no fine-tuning')
    print(f'{"model":<{width}}  ' + '  '.join(f'{k:>16}' for k in keys))
    for row, metrics in rows.items():
        print(f'{row:<{width}}  ' + '  '.join(f'{metrics[k]:>16.4f}' for k in keys))
    meta = export_ticket(out, pruner, strip_conv_cfg(cfg.model.backbone),
                         input_shape, source=args.checkpoint)
    print(f'ticket ({recoveries[-1]}{" + BN recalibration" if recalibrate else ""}, sparsity '
          f'{meta["sparsity"]:.4f}) written to {out}')
    if args.out_json:
        os.makedirs(osp.dirname(osp.abspath(args.out_json)), exist_ok=True)
        with open(args.out_json, 'w') as f:
            json.dump(dict(sparsity=sparsity, checkpoint=args.checkpoint, ticket=out,
                           rows={r: {k: float(v) for k, v in m.items()}
                                 for r, m in rows.items()}), f, indent=2)
    return rows


if __name__ == '__main__':
    sys.exit(0 if run_tool(main) is not None else 1)
