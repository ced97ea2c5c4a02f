"""The GPU check's command line: sections, dtypes, sizes and the time budget, checked."""
import argparse
import os
import os.path as osp

import torch

from mmrecprune.cli import CLIError, check_output_path, check_work_dir

DESCRIPTION = 'The GPU check: what a CPU run cannot show, in one run of a few minutes on one GPU.'
SECTIONS = ('amp', 'retinanet', 'ddp', 'slim', 'nm')
DTYPES = dict(bfloat16=torch.bfloat16, float16=torch.float16, float32=torch.float32)
MODES = ('eager', 'compile')
#: seconds a section needs at least (the defaults' sizes on one H200); it is skipped when less
#: is left
SECTION_SECONDS = dict(amp=60, retinanet=30, ddp=40, slim=60, nm=45)
JSON_NAME, PNG_NAME = 'gpu_check.json', 'gpu_check.png'


def build_parser():
    parser = argparse.ArgumentParser(
        prog='gpu_check.py', description=DESCRIPTION)
    parser.add_argument('--out-dir', default=os.environ.get('OUT') or 'work_dirs/gpu_check',
                        help=f'where {JSON_NAME} and {PNG_NAME} go (default: $OUT, else '
                             'work_dirs/gpu_check)')
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument('--device', default='cuda', help="'cuda' (default) or 'cpu'")
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='bfloat16',
                        help='dtype of the latency runs (default bfloat16)')
    parser.add_argument('--amp-dtypes', nargs='+', choices=('float16', 'bfloat16'),
                        default=['float16', 'bfloat16'])
    parser.add_argument('--depth', type=int, choices=(18, 34, 50, 101), default=50)
    parser.add_argument('--input-size', type=int, default=224)
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 32, 256])
    parser.add_argument('--nm-batch-sizes', type=int, nargs='+', default=[32, 256])
    parser.add_argument('--flops', type=float, nargs='+', default=[0.5, 0.75],
                        help='fractions of the FLOPs the slim tickets remove')
    parser.add_argument('--round-to', type=int, default=8,
                        help='kept widths a multiple of this (tensor cores like 8)')
    parser.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES))
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--budget-s', type=float, default=420.0,
                        help='seconds this run may take; what does not fit is skipped')
    parser.add_argument('--no-torch-pruning', action='store_true',
                        help="skip Torch-Pruning's slim models")
    parser.add_argument('--force', action='store_true', help='overwrite an earlier result')
    return parser


def parse_args(argv=None):
    """The arguments, checked: bad values and existing outputs are a :class:`CLIError`."""
    args = build_parser().parse_args(argv)
    for name in ('batch_sizes', 'nm_batch_sizes'):
        if any(b < 1 for b in getattr(args, name)):
            raise CLIError(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if not all(0 < f < 1 for f in args.flops):
        raise CLIError(f'--flops are fractions of the FLOPs to remove, in (0, 1); got '
                       f'{args.flops}')
    for name, low in (('input_size', 8), ('round_to', 1), ('repeats', 1), ('warmup', 0)):
        if getattr(args, name) < low:
            raise CLIError(f'--{name.replace("_", "-")} must be >= {low}, got '
                           f'{getattr(args, name)}')
    if not args.budget_s > 0:
        raise CLIError(f'--budget-s must be > 0, got {args.budget_s}')
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise CLIError(f"--device {args.device!r} is not a device (e.g. 'cuda', 'cuda:0', "
                       "'cpu')") from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise CLIError(f'--device {args.device}: this machine has no CUDA device (PyTorch '
                       f'{torch.__version__}); run on a GPU machine or pass --device cpu')
    if device.type not in ('cuda', 'cpu'):
        raise CLIError(f"--device must be 'cuda' or 'cpu', got {args.device!r}")
    args.device = str(device)
    check_work_dir(args.out_dir, '--out-dir')
    for name in (JSON_NAME, PNG_NAME):
        check_output_path(osp.join(args.out_dir, name), args.force, 'result')
    return args
