"""Export a model trained on a ticket (or a ticket's backbone alone) to ONNX and check it
against PyTorch with onnxruntime.

    # a detector / segmentor / classifier config and its checkpoint:
    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --shape 1 3 512 512 --out model.onnx
    # the backbone of a ticket (slim or unstructured), no config needed:
    python tools/deployment/pytorch2onnx.py --ticket work_dirs/.../tickets/slim.pth --out b.onnx

Prints the max absolute difference between onnxruntime and PyTorch on a random input (per
output and overall) and exits 1 if it exceeds ``--atol``. The whole network is exported as its
``mode='tensor'`` forward (raw head outputs, no NMS / post-processing), the form
MMDeploy-style runtimes post-process themselves. Needs ``pip install .[deploy]`` (onnx,
onnxscript, onnxruntime). A failed export writes nothing.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?', help='model config (omit with --ticket)')
    parser.add_argument('checkpoint', nargs='?', help='trained weights (optional)')
    parser.add_argument('--ticket', help='export this ticket\'s backbone instead of a config')
    parser.add_argument('--backbone-only', action='store_true',
                        help='with a config: export model.backbone only')
    parser.add_argument('--shape', type=int, nargs=4, default=[1, 3, 224, 224],
                        metavar=('N', 'C', 'H', 'W'))
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument('--opset', type=int, default=18)
    parser.add_argument('--atol', type=float, default=1e-3,
                        help='largest accepted |onnxruntime - PyTorch| (default 1e-3)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.backbone.ticket=T.pth')
    return parser.parse_args()


def build(args):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    import mmrecprune  # noqa: F401  registries, safe checkpoint loading
    from mmrecprune.registry import MODELS
    if args.ticket:
        if args.config:
            raise SystemExit('give either CONFIG [CHECKPOINT] or --ticket, not both')
        backbone = MODELS.build(dict(type='mmrecprune.PrunedBackbone', ticket=args.ticket,
                                     out_indices=(0, 1, 2, 3)))
        return backbone, False
    if not args.config:
        raise SystemExit('give a CONFIG (and CHECKPOINT), or --ticket')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmrecprune'))
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    return model, args.backbone_only


def main():
    args = parse_args()
    from mmrecprune.analysis import export_onnx, max_abs_difference
    model, backbone_only = build(args)
    model.eval()  # not chained: mmdet's ResNet.train() returns None
    try:
        wrapped = export_onnx(model, args.shape, args.out, backbone_only, args.opset)
    except (RuntimeError, TypeError, ImportError) as err:
        raise SystemExit(str(err)) from None
    worst, diffs = max_abs_difference(wrapped, args.out, args.shape)
    print(f'{args.out}: {len(diffs)} outputs; max |onnxruntime - PyTorch| = {worst:.3g} '
          f'(per output: {", ".join(f"{d:.2g}" for d in diffs)})')
    if worst > args.atol:
        raise SystemExit(f'onnxruntime differs from PyTorch by {worst:.3g} > --atol {args.atol}')


if __name__ == '__main__':
    main()
