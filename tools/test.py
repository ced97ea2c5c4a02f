"""Evaluate a checkpoint with an OpenMMLab config (same arguments as MMDetection's)."""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmrecprune  # noqa: F401  registries, safe checkpoint loading
from mmrecprune.cli import (check_output_path, check_torch_archive, check_work_dir, load_config,
                            merge_cfg_options, run_tool)
from mmrecprune.utils import setup_cpu_distributed, teardown_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Test a model (mmrecprune)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save evaluation results')
    parser.add_argument('--out', help='dump the metrics to this json file')
    parser.add_argument('--force', action='store_true',
                        help='overwrite the --out file if it exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy format')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    merge_cfg_options(cfg, args.cfg_options, args.config)
    check_torch_archive(args.checkpoint, 'checkpoint')
    check_output_path(args.out, args.force, '--out')
    check_work_dir(args.work_dir)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    metrics = runner.test()
    del runner  # see teardown_distributed
    teardown_distributed()
    if args.out:
        import json
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)


if __name__ == '__main__':
    sys.exit(run_tool(main))
