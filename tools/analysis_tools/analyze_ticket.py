"""Params, FLOPs and measured CPU latency of a backbone: a config's dense one, or a ticket's.

For a **config** (``*.py``) the backbone of ``model.backbone`` is built densely (a config whose
backbone is a ``PrunedBackbone`` is analysed through its ticket). For a **ticket** (``*.pth``)
both the dense backbone of its config and the pruned one are measured:

* params and FLOPs (= MACs) with :func:`mmrecprune.sparsity.count_flops_params` (unstructured
  tickets also report the non-zero counts: their shapes, and so their speed, stay dense);
* latency at batch 1 and 8 for ``--input-size``: ``torch.inference_mode``, ``--warmup`` untimed
  runs, then ``--repeats`` rounds in which the models run in turn (interleaved, so a load
  change on the machine hits all of them alike), median per model; with ``--deployed`` also
  as deployed (BN fused, TorchScript frozen for oneDNN; see
  :func:`mmrecprune.analysis.deployed`);
* a PNG of the kept output channels of every conv (structured / dense) or the per-layer
  sparsity (unstructured), next to the input file unless ``--out`` says otherwise.

``--cfg-options`` override settings of a config given as PATH (e.g.
``model.backbone.ticket=T.pth`` or ``model.backbone.base_channels=32``); a ticket has no
config to override.

Example::

    python tools/analysis_tools/analyze_ticket.py \\
        work_dirs/psap_r18-w16_1xb128-4e_fashionmnist/tickets/slim.pth --input-size 56
"""
import argparse
import itertools
import os.path as osp

import torch
from mmengine.config import DictAction

import mmrecprune  # noqa: F401  registries
from mmrecprune.analysis import conv_widths, deployed, interleaved_latency, load_models
from mmrecprune.analysis.ticket_models import MAX_DENSE_GB
from mmrecprune.cli import check_input_file, check_output_path, run_tool
from mmrecprune.sparsity import (count_flops_params, plot_kept_channels, plot_layer_sparsity,
                                 sparsity_report)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('path', help='a config (.py) or a ticket (.pth)')
    parser.add_argument('--input-size', type=int, nargs='+', default=None,
                        help='H [W] of the input (default: the ticket\'s input_shape, else 224)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--repeats', type=int, default=10, help='timed rounds (default 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs (default 2)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--deployed', action='store_true',
                        help='also time the models as deployed: BN fused, TorchScript frozen, '
                        'oneDNN (see deployed())')
    parser.add_argument('--out', default=None,
                        help='PNG path (default: <input>_channels.png next to the input, '
                        'replaced when it exists)')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    parser.add_argument('--max-dense-gb', type=float, default=MAX_DENSE_GB,
                        help="refuse a ticket whose dense backbone (the ticket's config at full "
                        f'width) would take more memory than this (default {MAX_DENSE_GB:g} GB)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config PATH, xxx=yyy format')
    return parser.parse_args()


def main():
    args = parse_args()
    check_input_file(args.path, 'config or ticket')
    check_output_path(args.out, args.force, '--out')
    if args.threads:
        torch.set_num_threads(args.threads)
    dense, pruned, ticket = load_models(args.path, args.cfg_options, args.max_dense_gb)
    if args.input_size:
        h, w = (args.input_size * 2)[:2]
    elif ticket is not None and ticket.meta.get('input_shape'):
        h, w = ticket.meta['input_shape'][2:]
    else:
        h = w = 224
    models = {'dense': dense}
    if pruned is not None:
        models[ticket.kind] = pruned
    for m in models.values():
        m.eval()  # not chained: mmdet's ResNet.train() returns None
    print(f'{args.path}: {type(dense).__name__}, input {h}x{w}, {torch.get_num_threads()} '
          f'CPU threads' + (f', {ticket.kind} ticket from {ticket.meta.get("method")}'
                            if ticket else ''))
    counts = {name: count_flops_params(m, (1, 3, h, w)) for name, m in models.items()}
    for name, (flops, params) in counts.items():
        line = f'  {name:<12} params {params / 1e6:8.3f} M   FLOPs {flops / 1e9:8.4f} G (MACs)'
        if name in ('unstructured', 'nm'):  # masks: count the non-zero entries too
            nz_flops, nz_params = count_flops_params(models[name], (1, 3, h, w),
                                                     nonzero_only=True)
            line += (f'   non-zero: params {nz_params / 1e6:.3f} M, '
                     f'FLOPs {nz_flops / 1e9:.4f} G')
        print(line)
    for batch, mode in itertools.product(args.batch_sizes,
                                         ('eager', 'deployed') if args.deployed else ('eager', )):
        shape = (batch, 3, h, w)
        timed = models if mode == 'eager' else {n: deployed(m, shape) for n, m in models.items()}
        lat = interleaved_latency(timed, shape, args.repeats, args.warmup)
        parts = [f'{name} {1e3 * t:8.2f} ms' for name, t in lat.items()]
        if len(lat) == 2:
            pruned_name = next(n for n in lat if n != 'dense')
            speedup = lat['dense'] / lat[pruned_name]
            ideal = counts['dense'][0] / counts[pruned_name][0]
            parts.append(f'speedup {speedup:.2f}x (FLOPs ideal {ideal:.2f}x)')
        print(f'  latency batch {batch} ({mode}): ' + '   '.join(parts) +
              f'   (median of {args.repeats}, interleaved)')
    out = args.out or osp.splitext(args.path)[0] + '_channels.png'
    if ticket is not None and ticket.masks:  # unstructured and nm (2:4) tickets
        report = sparsity_report(ticket.masks)
        plot_layer_sparsity(report, out, title=f'{osp.basename(args.path)}: '
                                               f'{100 * report["sparsity"]:.1f} % sparse')
    else:
        widths = conv_widths(dense, pruned if pruned is not None else dense)
        kept, total = (sum(v[i] for v in widths.values()) for i in (0, 1))
        plot_kept_channels(widths, out, title=f'{osp.basename(args.path)}: {kept} of {total} '
                                              'conv output channels kept')
    print(f'  plot: {out}')


if __name__ == '__main__':
    run_tool(main)
