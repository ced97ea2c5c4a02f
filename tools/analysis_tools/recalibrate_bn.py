"""Re-estimate the BN statistics of any trained model (e.g. one built on a ticket) on a few
hundred training images, with no weight update; print the validation metrics before and after,
and write the recalibrated checkpoint.

    python tools/analysis_tools/recalibrate_bn.py CONFIG CHECKPOINT --images 512 --out new.pth
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import DictAction

import mmrecprune  # noqa: F401  registries, safe checkpoint loading
from mmrecprune.cli import CLIError, check_output_path, check_work_dir, load_config, run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Recalibrate BN statistics of a checkpoint')
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='a checkpoint of that config')
    parser.add_argument('--images', type=int, default=512, help='training images to use')
    parser.add_argument('--out', required=True, help='recalibrated checkpoint to write')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    parser.add_argument('--work-dir', help='work dir of the evaluation (logs)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy format')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.images <= 0:
        raise CLIError(f'--images must be > 0, got {args.images}')
    if osp.abspath(args.out) == osp.abspath(args.checkpoint):
        raise CLIError('--out must not be the input checkpoint (nothing is overwritten)')
    cfg = load_config(args.config, args.cfg_options)
    cfg.work_dir = check_work_dir(args.work_dir) or osp.join(
        'work_dirs', 'recalibrate_bn', osp.splitext(osp.basename(args.config))[0])

    from mmrecprune.analysis import (load_exact_weights, offline_runner,
                                     read_training_checkpoint, recalibrate_bn, validation_scorer)
    try:
        ckpt = read_training_checkpoint(args.checkpoint)
    except ValueError as err:
        raise CLIError(str(err)) from None
    check_output_path(args.out, args.force, '--out')

    runner = offline_runner(cfg)
    model = runner.model
    try:
        load_exact_weights(model, args.checkpoint, ckpt)
    except ValueError as err:
        raise CLIError(str(err)) from None
    score = validation_scorer(runner, cfg)
    before = score()
    seen = recalibrate_bn(model, runner.build_dataloader(cfg.train_dataloader), args.images)
    after = score()
    for name, metrics in (('before', before), (f'after ({seen} images)', after)):
        print(f'{name:>20}: ' + ', '.join(f'{k} {v:.4f}' for k, v in metrics.items()))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    # a bare (torchvision-format) state dict has nothing besides its weights to keep
    kept = ckpt if 'state_dict' in ckpt else {}
    torch.save(dict(kept, state_dict=model.state_dict()), args.out)
    print(f'recalibrated checkpoint written to {args.out}')
    return before, after


if __name__ == '__main__':
    run_tool(main)
