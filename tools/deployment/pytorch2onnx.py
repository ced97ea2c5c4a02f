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
onnxscript, onnxruntime). A failed export writes nothing; an existing ``--out`` is refused
unless ``--force``.
"""
import argparse

from mmengine.config import DictAction

from mmrecprune import cli


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?', help='model config (omit with --ticket)')
    parser.add_argument('checkpoint', nargs='?', help='trained weights (optional)')
    parser.add_argument('--ticket', help='export this ticket\'s backbone instead of a config')
    parser.add_argument('--backbone-only', action='store_true',
                        help='with a config: export model.backbone only')
    parser.add_argument('--shape', type=int, nargs=4, default=[1, 3, 224, 224],
                        metavar=('N', 'C', 'H', 'W'))
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    parser.add_argument('--opset', type=int, default=18)
    parser.add_argument('--atol', type=float, default=1e-3,
                        help='largest accepted |onnxruntime - PyTorch| (default 1e-3)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of CONFIG, xxx=yyy format, e.g. '
                        'model.backbone.ticket=T.pth')
    return parser.parse_args()


def check_inputs(args):
    """Refuse missing or wrong files and an existing --out before anything is built."""
    if args.ticket and args.config:
        raise cli.CLIError('give either CONFIG [CHECKPOINT] or --ticket, not both')
    if not args.ticket and not args.config:
        raise cli.CLIError('give a CONFIG (and CHECKPOINT), or --ticket')
    if args.ticket and args.cfg_options:
        raise cli.CLIError(f'--cfg-options override settings of a CONFIG; --ticket '
                           f'{args.ticket} exports the ticket\'s backbone with no config (give '
                           'a CONFIG with model.backbone.ticket=... to change its settings)')
    cli.check_input_file(args.ticket, '--ticket')
    cli.check_input_file(args.config, 'config')
    if args.checkpoint:
        cli.check_torch_archive(args.checkpoint, 'checkpoint')
    cli.check_output_path(args.out, args.force, '--out')


def build(args):
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    import mmrecprune  # noqa: F401  registries, safe checkpoint loading
    from mmrecprune.registry import MODELS
    from mmrecprune.tickets import load_ticket
    if args.ticket:
        load_ticket(args.ticket)  # a file that is no ticket: named here, before any build
        backbone = MODELS.build(dict(type='mmrecprune.PrunedBackbone', ticket=args.ticket,
                                     out_indices=(0, 1, 2, 3)))
        return backbone, False
    cfg = cli.load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmrecprune'))
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        try:
            load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
        except (RuntimeError, KeyError) as err:
            raise cli.CLIError(f'checkpoint {args.checkpoint} does not fit the model of '
                               f'{args.config}: {cli.one_line(err)}') from None
    return model, args.backbone_only


def main():
    args = parse_args()
    check_inputs(args)
    from mmrecprune.analysis import export_onnx, max_abs_difference
    model, backbone_only = build(args)
    model.eval()  # not chained: mmdet's ResNet.train() returns None
    try:
        wrapped = export_onnx(model, args.shape, args.out, backbone_only, args.opset)
    except (RuntimeError, TypeError, ImportError) as err:
        cli.fail(err, status=1)  # the model, not the input: exit status 1 as before
    worst, diffs = max_abs_difference(wrapped, args.out, args.shape)
    print(f'{args.out}: {len(diffs)} outputs; max |onnxruntime - PyTorch| = {worst:.3g} '
          f'(per output: {", ".join(f"{d:.2g}" for d in diffs)})')
    if worst > args.atol:
        raise SystemExit(f'onnxruntime differs from PyTorch by {worst:.3g} > --atol {args.atol}')


if __name__ == '__main__':
    cli.run_tool(main)
