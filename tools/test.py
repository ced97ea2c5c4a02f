"""Test (evaluate) a checkpoint with an OpenMMLab config: MMDetection 3.x's ``tools/test.py``
arguments, for detection, segmentation and classification configs alike.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out PREDICTIONS.pkl]
        [--out-json METRICS.json] [--show] [--show-dir DIR] [--wait-time S]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi] [--tta]

* The metrics are printed and MMEngine writes them to ``WORK_DIR/TIMESTAMP/TIMESTAMP.json``
  (``--work-dir``, else the config's ``work_dir``, else ``work_dirs/<config name>``).
* ``--out`` (a ``.pkl`` / ``.pickle`` file) dumps the predictions for offline evaluation, as
  MMDetection does: ``DumpDetResults`` for an ``mmdet`` config (ground truth dropped, masks as
  RLE; what MMDetection's ``tools/analysis_tools`` read, e.g. ``eval_metric.py CONFIG PKL``),
  MMEngine's ``DumpResults`` for the others (mmseg, classification). MMSegmentation's own
  ``--out DIR`` (the prediction PNGs of ``IoUMetric``) is
  ``--cfg-options test_evaluator.output_dir=DIR test_evaluator.keep_results=True``.
* ``--out-json`` writes the metrics as one JSON object (``{"coco/bbox_mAP": 0.31, ...}``): what
  the pipelines and ``check_model_zoo.py`` read. (It was ``--out`` before ``--out`` took
  MMDetection's meaning.)
* ``--show`` / ``--show-dir`` turn on the config's ``default_hooks.visualization`` with
  ``draw=True``: a ``DetVisualizationHook`` writes the painted images to
  ``WORK_DIR/TIMESTAMP/SHOW_DIR`` (SHOW_DIR itself when absolute), as MMDetection does; a
  ``SegVisualizationHook`` to ``SHOW_DIR/vis_data/vis_image`` (the visualizer's ``save_dir``), as
  MMSegmentation does, but every image (``interval=1`` unless the config sets one; mmseg's
  default paints every 50th batch). A config without that hook (this repo's classification
  configs) is refused with one line.
* ``--tta`` wraps the model in the config's ``tta_model`` and tests with its ``tta_pipeline``;
  an ``mmdet`` config without them gets MMDetection's default (horizontal flip, merged by NMS).

An existing ``--out`` / ``--out-json`` file is refused unless ``--force``; bad input stops with
one line before the model is built.
"""
import argparse
import copy
import os
import os.path as osp
import sys
import warnings

from mmengine.config import ConfigDict, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmrecprune  # noqa: F401  registries, safe checkpoint loading
from mmrecprune.cli import (CLIError, check_output_path, check_torch_archive, check_work_dir,
                            load_config, merge_cfg_options, run_tool)
from mmrecprune.distributed import setup_cpu_distributed, teardown_distributed

PICKLE_SUFFIXES = ('.pkl', '.pickle')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model (mmrecprune; '
                                     "MMDetection's arguments)")
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory for the logs and the metrics file')
    parser.add_argument('--out', help='dump the predictions to this pickle file (.pkl) for '
                        'offline evaluation')
    parser.add_argument('--out-json', help='write the metrics to this JSON file')
    parser.add_argument('--force', action='store_true',
                        help='overwrite the --out / --out-json file if it exists')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory where painted images will be saved '
                        '(under WORK_DIR/TIMESTAMP for detection configs)')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='the interval of --show (s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy format (MMEngine\'s DictAction)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def check_outputs(args):
    """Refuse an ``--out`` that is no pickle name, and outputs that exist or collide."""
    if args.out is not None:
        if not args.out.endswith(PICKLE_SUFFIXES):
            hint = (' (the metrics as JSON are --out-json now)'
                    if args.out.endswith('.json') else '')
            raise CLIError(f'--out {args.out}: the predictions are dumped as a pickle; give a '
                           f'.pkl or .pickle file name{hint}')
        check_output_path(args.out, args.force, '--out')
    check_output_path(args.out_json, args.force, '--out-json')
    if args.out and args.out_json and osp.abspath(args.out) == osp.abspath(args.out_json):
        raise CLIError(f'--out and --out-json are both {args.out}; give two files')


def is_seg_hook(hook):
    """Whether ``hook`` (a config dict) is MMSegmentation's visualization hook."""
    return 'SegVisualizationHook' in str(hook.get('type', ''))


def trigger_visualization(cfg, args):
    """Turn on ``default_hooks.visualization`` for ``--show`` / ``--show-dir``
    (:class:`CLIError` when the config has none)."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise CLIError(f'config {args.config} has no visualization hook '
                       '(default_hooks.visualization), which --show / --show-dir draw with; add '
                       "one, e.g. --cfg-options default_hooks.visualization.type="
                       "DetVisualizationHook for an mmdet config")
    hook['draw'] = True
    if args.show:
        hook.update(show=True, wait_time=args.wait_time)
    if args.show_dir:
        if is_seg_hook(hook):  # MMSegmentation: the images go through the visualizer
            check_work_dir(args.show_dir, '--show-dir')
            # every image, as DetVisualizationHook paints them (mmseg's hook draws every 50th
            # batch unless the config says otherwise)
            hook.setdefault('interval', 1)
            cfg.visualizer['save_dir'] = args.show_dir
            backends = cfg.visualizer.setdefault('vis_backends', [])
            if not any('LocalVisBackend' in str(b.get('type', '')) for b in backends):
                backends.append(dict(type='LocalVisBackend'))
        else:  # MMDetection: the hook writes them under WORK_DIR/TIMESTAMP
            if osp.isabs(args.show_dir):
                check_work_dir(args.show_dir, '--show-dir')
            hook['test_out_dir'] = args.show_dir
    return cfg


def innermost_dataset(dataset_cfg):
    """The dataset a wrapper (``RepeatDataset``, ``ClassBalancedDataset``...) wraps."""
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def default_det_tta(cfg):
    """MMDetection's default test-time augmentation for a config that names none: the test
    pipeline with and without a horizontal flip, merged by NMS (IoU 0.5, 100 boxes)."""
    if 'tta_model' not in cfg:
        warnings.warn('--tta: the config has no tta_model; using DetTTAModel (NMS 0.5)')
        cfg.tta_model = dict(type='DetTTAModel', tta_cfg=dict(
            nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    if 'tta_pipeline' not in cfg:
        warnings.warn('--tta: the config has no tta_pipeline; using the test pipeline with '
                      'and without a horizontal flip')
        pipeline = copy.deepcopy(innermost_dataset(cfg.test_dataloader.dataset).pipeline)
        pack = dict(type='PackDetInputs', meta_keys=(
            'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
            'flip_direction'))
        pipeline[-1] = dict(type='TestTimeAug', transforms=[
            [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)], [pack]])
        cfg.tta_pipeline = pipeline


def apply_tta(cfg, args):
    """Wrap the model in ``tta_model`` and test with ``tta_pipeline``."""
    if cfg.get('default_scope') == 'mmdet':
        default_det_tta(cfg)
    missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
    if missing:
        raise CLIError(f'--tta: config {args.config} has no {" / ".join(missing)} (test-time '
                       'augmentation needs both: the wrapper model and the pipeline)')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    return cfg


def dump_metric(cfg, out_file):
    """The evaluator metric that dumps the predictions to ``out_file``: mmdet's
    ``DumpDetResults`` for an mmdet config, MMEngine's ``DumpResults`` otherwise."""
    if cfg.get('default_scope') == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out_file)
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=out_file)


def write_metrics_json(metrics, path):
    """``metrics`` as one JSON object, numbers as floats (anything else as its text)."""
    import json

    def number(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump({k: number(v) for k, v in metrics.items()}, f, indent=2, default=str)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    merge_cfg_options(cfg, args.cfg_options, args.config)
    check_torch_archive(args.checkpoint, 'checkpoint')
    check_outputs(args)
    check_work_dir(args.work_dir)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        trigger_visualization(cfg, args)
    if args.tta:
        apply_tta(cfg, args)

    setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out is not None:
        runner.test_evaluator.metrics.append(dump_metric(cfg, args.out))
    metrics = runner.test()
    del runner  # see teardown_distributed
    teardown_distributed()
    if args.out_json:
        write_metrics_json(metrics, args.out_json)


if __name__ == '__main__':
    sys.exit(run_tool(main))
