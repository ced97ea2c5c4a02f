"""Post-training structured pruning: slim a trained classifier, detector or segmentor from a
few hundred calibration images, with no training.

Channels inside the backbone's blocks are cut to the FLOPs target (chosen by ``--importance``
with ``--ranking``), the layers that read the cut channels are re-fitted on the calibration
activations (``--reconstruction``) and, with ``--bn-recalibration``, the BN
statistics re-estimated. Prints the test metrics before and after and the measured
CPU speed-up of the whole model; writes the ticket (``--out``), a slim checkpoint of the whole
model beside it (``<ticket>_model.pth``) and the config that loads it (``<ticket>_model.py``:
the backbone becomes ``mmrecprune.PrunedBackbone`` on the ticket). Settings default to the
config's ``post_training`` pruner if it has one (configs/posttrain). An existing output is
refused unless ``--force``; bad input stops with one line, before any work.

    python tools/prune_post_training.py CONFIG CHECKPOINT --flops 0.5 \\
        --calibration-images 512 --out work_dirs/posttrain/ticket.pth
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

from mmengine.config import DictAction

import mmrecprune  # noqa: F401  registries, safe checkpoint loading
from mmrecprune.analysis.post_training import ridge_arg
from mmrecprune.cli import (CLIError, check_output_path, check_torch_archive, check_work_dir,
                            load_config, run_tool)

RECONSTRUCTIONS = ('none', 'mean', 'least_squares', 'least_squares+mean')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Post-training structured pruning: slim a trained model, no training')
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='a checkpoint of that config')
    parser.add_argument('--flops', type=float,
                        help='fraction of the backbone FLOPs to remove, in (0, 1) (default: the '
                             "config's post_training target, else 0.5)")
    parser.add_argument('--calibration-images', type=int, default=512,
                        help='train images the calibration passes use (default 512)')
    parser.add_argument('--importance', help="channel criterion: L1, L2, BNScale, Activation "
                        "(uses the calibration data), Random (default: the config's, else L1)")
    parser.add_argument('--ranking', choices=('global', 'uniform'),
                        help="rank channels across groups or cut one ratio per group "
                             "(default: the config's, else global)")
    parser.add_argument('--reconstruction', choices=RECONSTRUCTIONS,
                        help='re-fit the layers that read cut channels (default: the '
                             "config's, else least_squares+mean)")
    parser.add_argument('--bn-recalibration', action=argparse.BooleanOptionalAction,
                        help='re-estimate the BN statistics on the calibration images last '
                             "(default: the config's, else off)")
    parser.add_argument('--ridge', type=ridge_arg,
                        help="ridge of the least-squares fit: 'auto' (default: chosen per layer "
                             'on held-out calibration batches) or a number >= 0')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the calibration sample (default 0)')
    parser.add_argument('--batch-size', type=int, default=64,
                        help='images per calibration batch (default 64)')
    parser.add_argument('--test-images', type=int,
                        help='score on the first N test images only (default: all)')
    parser.add_argument('--speed-batch', type=int, default=8,
                        help='batch of the CPU latency measurement (default 8)')
    parser.add_argument('--out', help='ticket to write (default: '
                        'WORK_DIR/tickets/posttrain_f<flops>.pth)')
    parser.add_argument('--out-json', help='write the metrics and settings here')
    parser.add_argument('--force', action='store_true', help='overwrite existing outputs')
    parser.add_argument('--work-dir', help='work dir of the evaluation (logs)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy format')
    return parser.parse_args(argv)


def pruner_settings(cfg, args):
    """The pruner's arguments: the command line over the config's ``post_training``."""
    base = dict(cfg.get('post_training', None) or {})
    base.pop('type', None)
    target = dict(base.pop('target', None) or dict(flops=0.5))
    if args.flops is not None:
        target = dict(flops=args.flops)
    fraction = next(iter(target.values()))
    if not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise CLIError(f'--flops must be a fraction in (0, 1) of the FLOPs to remove, got '
                       f'{fraction}')
    if args.calibration_images < 1:
        raise CLIError(f'--calibration-images must be >= 1, got {args.calibration_images}')
    if args.batch_size < 1 or args.speed_batch < 1:
        raise CLIError('--batch-size and --speed-batch must be >= 1')
    settings = dict(base, target=target)
    if args.importance:
        settings['importance'] = dict(type=args.importance)
    if args.ranking:
        settings['ranking'] = args.ranking
    if args.reconstruction:
        settings['reconstruction'] = (None if args.reconstruction == 'none'
                                      else args.reconstruction)
    if args.bn_recalibration is not None:
        settings['bn_recalibration'] = args.bn_recalibration
    if args.ridge is not None:
        settings['ridge'] = args.ridge
    return settings


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    check_torch_archive(args.checkpoint)
    settings = pruner_settings(cfg, args)
    cfg.work_dir = check_work_dir(args.work_dir) or osp.join(
        'work_dirs', 'prune_post_training', osp.splitext(osp.basename(args.config))[0])
    flops = settings['target'].get('flops', next(iter(settings['target'].values())))
    if args.out:
        out = check_output_path(args.out, args.force, '--out')
    else:  # the work dir's own file, named by the settings: a rerun replaces it
        out = osp.join(cfg.work_dir, 'tickets', f'posttrain_f{round(100 * flops)}.pth')
    stem = osp.splitext(out)[0]
    model_out, config_out = f'{stem}_model.pth', f'{stem}_model.py'
    for path in (model_out, config_out):
        check_output_path(path, args.force or not args.out, 'output')
    check_output_path(args.out_json, args.force, '--out-json')

    import torch

    from mmrecprune.analysis import interleaved_latency, load_exact_weights, offline_runner
    from mmrecprune.analysis.post_training import (CalibrationProgress, calibration_batches,
                                                   test_scorer)
    from mmrecprune.fileio import load_mmengine_checkpoint
    from mmrecprune.methods import PostTrainingPruner
    from mmrecprune.models.slim_task_model import build_written_model, write_task_model
    from mmrecprune.sparsity import count_flops_params, strip_conv_cfg
    from mmrecprune.tickets import export_ticket, load_ticket
    try:
        pruner = PostTrainingPruner(seed=args.seed, **settings)
    except (TypeError, ValueError) as err:
        raise CLIError(f'post-training pruner settings: {err}') from None
    runner = offline_runner(cfg)
    model = runner.model
    try:
        load_exact_weights(model, args.checkpoint)
        batches = calibration_batches(runner, cfg, args.calibration_images, args.seed,
                                      args.batch_size)
    except ValueError as err:
        raise CLIError(str(err)) from None
    model.eval()
    score = test_scorer(runner, cfg, args.test_images)
    shape = (1, *batches[0].shape[1:])
    print('scoring the dense model on the test split...', flush=True)
    before = score(model)
    pruner.attach(model, batches[0][:1])
    images = sum(len(b) for b in batches)
    start = time.perf_counter()
    if pruner.needs_calibration_for_ranking:
        print(f'ranking channels by {pruner.selector.importance_cfg["type"]} on {images} train '
              f'images (seed {args.seed})', flush=True)
        pruner.calibrate_ranking(batches, progress=CalibrationProgress(1, images))
        print()
    pruner.commit(pruner.plan())
    print(f'recovery ({pruner.recovery}): {pruner.calibration_passes} passes over {images} '
          f'train images (seed {args.seed})', flush=True)
    pruner.recover(batches, progress=CalibrationProgress(pruner.calibration_passes, images))
    prune_seconds = time.perf_counter() - start
    print()
    meta = export_ticket(out, pruner, strip_conv_cfg(cfg.model.backbone), shape,
                         source=args.checkpoint)
    load_ticket(out)  # what we wrote loads through the schema
    # the slim model and its config, checked against the pruned model; scored as a user
    # builds it from the two files (backbone: mmrecprune.PrunedBackbone on the ticket)
    config_out, model_out = write_task_model(
        model, pruner, out, cfg, score.dataset_meta,
        input_shape=shape, meta=dict(source=args.checkpoint, method=pruner.method))
    slim = build_written_model(config_out, load_mmengine_checkpoint(model_out)['state_dict'])
    slim.eval()
    after = score(slim)

    dense_flops = count_flops_params(pruner.dense, shape)[0]
    slim_flops = count_flops_params(slim, shape)[0]
    speed_shape = (args.speed_batch, *shape[1:])
    lat = interleaved_latency(dict(dense=pruner.dense, slim=slim), speed_shape, repeats=10,
                              warmup=2)
    keys = [k for k in before if isinstance(before[k], (int, float))]
    print(f'\npost-training pruning of {args.checkpoint}: backbone FLOPs '
          f'{meta["flops_ratio"]:.1%} of dense (target -{flops:.0%}), '
          f'{pruner.selector.importance_cfg["type"]} {pruner.ranking}, recovery '
          f'{pruner.recovery}, {images} calibration images, no training '
          f'({prune_seconds:.1f} s)')
    width = max(len(k) for k in keys) if keys else 6
    print(f'{"metric":<{width}}  {"before":>10}  {"after":>10}  {"change":>10}')
    for k in keys:
        print(f'{k:<{width}}  {before[k]:>10.4f}  {after[k]:>10.4f}  '
              f'{after[k] - before[k]:>+10.4f}')
    speedup = lat['dense'] / lat['slim']
    print(f'whole model: FLOPs {slim_flops / dense_flops:.1%} of dense; CPU latency '
          f'(batch {args.speed_batch}, {torch.get_num_threads()} threads, eager) '
          f'{lat["dense"] * 1e3:.1f} -> {lat["slim"] * 1e3:.1f} ms, speed-up {speedup:.2f}x')
    print(f'ticket written to {out}; slim model {model_out} (config {config_out})')
    result = dict(checkpoint=args.checkpoint, ticket=out, model=model_out, config=config_out,
                  settings=dict(settings, seed=args.seed), recovery=pruner.recovery,
                  calibration_images=images, before=before, after=after,
                  backbone_flops_ratio=meta['flops_ratio'],
                  model_flops_ratio=slim_flops / dense_flops, speedup=speedup,
                  latency_ms=dict(dense=lat['dense'] * 1e3, slim=lat['slim'] * 1e3),
                  prune_seconds=prune_seconds)
    if args.out_json:
        os.makedirs(osp.dirname(osp.abspath(args.out_json)), exist_ok=True)
        with open(args.out_json, 'w') as f:
            json.dump(result, f, indent=2, default=float)
    return result


if __name__ == '__main__':
    sys.exit(0 if run_tool(main) is not None else 1)
