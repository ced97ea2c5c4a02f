"""``tools/train.py`` as a function: the same arguments as MMDetection's ``tools/train.py``.

``tools/train.py`` is the entry point users run (alone, or under ``tools/dist_train.sh`` /
``tools/slurm_train.sh``); it calls :func:`main`. :func:`main` takes an ``argv`` so that one
process can run several trainings in a row (``keep_process_group=True`` leaves the process
group of a distributed run for the next one), as the full-size config test does with
:mod:`mmrecprune.testing.train_many`.
"""
import argparse
import os
import os.path as osp

from mmrecprune.cli import (CLIError, check_starting_files, check_torch_archive, check_work_dir,
                            load_config, merge_cfg_options)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(prog='train.py', description='Train a model (mmrecprune)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='enable automatically scaling LR')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or from the latest one in '
                        'work_dir when no path is given')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy format')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args):
    from mmrecprune.hooks import with_plain_checkpoints
    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    merge_cfg_options(cfg, args.cfg_options, args.config)
    if args.resume not in (None, 'auto'):
        check_torch_archive(args.resume, '--resume checkpoint')
    check_work_dir(args.work_dir)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        optim_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_type == 'OptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
        elif not optim_type.startswith('Amp') and 'Amp' not in optim_type:
            cfg.optim_wrapper.type = optim_type.replace('mmrecprune.', 'mmrecprune.Amp', 1) \
                if optim_type.startswith('mmrecprune.') else 'Amp' + optim_type
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise CLIError('--auto-scale-lr needs `auto_scale_lr=dict(enable=..., '
                           'base_batch_size=...)` in the config')
        cfg.auto_scale_lr.enable = True
    with_plain_checkpoints(cfg)  # checkpoints load with plain torch.load(weights_only=True)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.resume is None:  # a resumed run reads its own checkpoint, not the starting files
        check_starting_files(cfg, args.config)
    return cfg


def main(argv=None, keep_process_group=False):
    """Parse ``argv`` (default: ``sys.argv[1:]``), build the config and train."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    import mmrecprune  # noqa: F401  registries, safe checkpoint loading
    from mmrecprune.distributed import setup_cpu_distributed, teardown_distributed
    args = parse_args(argv)
    cfg = build_config(args)
    setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    del runner  # its DDP wrapper holds the process group; see teardown_distributed
    if not keep_process_group:
        teardown_distributed()
