"""The GPU check: what a CPU run cannot show, in one run of a few minutes on one GPU.

Run by ``tools/benchmarks/gpu_check.sh`` (which installs the packages first) through
``tools/benchmarks/gpu_check.py``. Sections, each recorded in one JSON (written again after
every section, so a run stopped by its time limit still leaves what it measured):

* ``amp``: ``tools/train.py --amp`` (fp16 and bf16) trains a ticket classifier (a ticket with
  non-zero fill values, ``frozen_stages=1``) and an IMP pruning run (``AmpPruningOptimWrapper``:
  masks under loss scaling) on a synthetic Fashion-MNIST; the checkpoints must hold every
  pruned entry at exactly 0 / its fill value, the frozen stages as in the ticket, and trained
  kept weights;
* ``retinanet``: mmdet's shipped RetinaNet config, only the backbone replaced by a ResNet-50
  ticket (filled, and 2:4), takes optimizer steps under ``AmpOptimWrapper`` (fp16, bf16) with
  the same checks (no NMS: the loss only);
* ``ddp``: ``tools/dist_train.sh CONFIG 1`` (NCCL, one process: a machine with one GPU) of two
  IMP rounds, through the hooks' DDP path (``mmrecprune.hooks.rank_sync``);
* ``slim``: latency of the dense ResNet-50 against slim tickets at -50 / -75 % FLOPs (ours,
  and Torch-Pruning's at the same FLOPs where ``torch_pruning`` imports), channels-last, in
  ``--dtype`` (bf16), at ``--batch-sizes``, eager and ``torch.compile``, CUDA events after
  warm-up, models interleaved so the ratios come from one run;
* ``nm``: a 2:4 ResNet-50 ticket: every 1x1 conv dense (cuDNN conv, and the same product as a
  dense matmul) against semi-structured sparse, and the whole backbone with
  ``semi_structured=False`` against ``True``, eager and compiled, plus how far the sparse
  outputs are from the dense masked ones.

Sections that need CUDA are skipped, with the reason, on other devices; ``slim`` runs on the
CPU too (the tests run it at tiny sizes). A section that would not fit the time left
(``--budget-s``) is skipped with a note, and so is every measurement inside one.

One module per part: :mod:`.arguments`, :mod:`.report` (the JSON and the time budget),
:mod:`.latency_sections` (``slim``, ``nm``), :mod:`.training_sections` (``amp``,
``retinanet``, ``ddp``) with :mod:`.repo_runs` (the repo tools they run), :mod:`.plot`; this
module runs them (:func:`main`).
"""
import os
import os.path as osp
import tempfile
import time

import torch

from .arguments import (DESCRIPTION, DTYPES, JSON_NAME, MODES, PNG_NAME, SECTION_SECONDS,
                        SECTIONS, build_parser, parse_args)
from .latency_sections import latency_table, nm_section, slim_section, to_device
from .plot import plot
from .repo_runs import (IMP_CONFIG, REPO, TINY_RUN, TWO_IMP_ROUNDS, checkpoint_state,
                        run_repo_tool, tiny_config, tool_env, write_synthetic_fashion_mnist)
from .report import Deadline, Report, machine
from .training_sections import (amp_section, ddp_section, frozen_unchanged, masks_hold,
                                pure_pytorch_focal_loss, retinanet_section)

__all__ = ['main', 'DESCRIPTION', 'SECTIONS', 'DTYPES', 'MODES', 'SECTION_SECONDS', 'JSON_NAME',
           'PNG_NAME', 'build_parser', 'parse_args', 'Deadline', 'Report', 'machine',
           'latency_table', 'to_device', 'slim_section', 'nm_section', 'REPO', 'IMP_CONFIG',
           'TWO_IMP_ROUNDS', 'TINY_RUN', 'write_synthetic_fashion_mnist', 'tool_env',
           'tiny_config', 'run_repo_tool', 'checkpoint_state', 'masks_hold', 'frozen_unchanged',
           'amp_section', 'pure_pytorch_focal_loss', 'retinanet_section', 'ddp_section', 'plot']


def main(argv=None):
    """Run the sections ``argv`` asks for (see :func:`parse_args`); returns the report's data."""
    args = parse_args(argv)
    deadline = Deadline(args.budget_s)
    os.makedirs(args.out_dir, exist_ok=True)
    report = Report(osp.join(args.out_dir, JSON_NAME), args)
    device, dtype = args.device, DTYPES[args.dtype]
    cuda = torch.device(device).type == 'cuda'
    work = tempfile.mkdtemp(prefix='gpu_check_')
    env = tool_env(work)
    needs_cuda = None if cuda else f'needs CUDA (--device {device})'
    if cuda:
        torch.backends.cudnn.benchmark = True
    for name in SECTIONS:
        if name not in args.sections:
            continue
        skip = needs_cuda if name in ('amp', 'retinanet', 'ddp') else None
        if name == 'nm' and skip is None:
            from mmrecprune.sparsity import semi_structured_unavailable
            skip = semi_structured_unavailable(device if cuda else None) if cuda else \
                'needs CUDA: semi-structured sparse kernels run on GPUs only'
        with report.section(name, deadline, SECTION_SECONDS[name], skip) as entry:
            if entry is None:
                continue
            print(f'[gpu_check] {name} ({deadline.left():.0f} s left)', flush=True)
            if name == 'amp':
                amp_section(entry, args, work, env)
            elif name == 'retinanet':
                retinanet_section(entry, args, work, device)
            elif name == 'ddp':
                ddp_section(entry, args, work, env)
            elif name == 'slim':
                slim_section(entry, args, deadline, device, dtype)
            else:
                nm_section(entry, args, deadline, device, dtype, work)
    report.data['finished'] = time.strftime('%Y-%m-%d %H:%M:%S')
    report.write()
    plot(report.data, osp.join(args.out_dir, PNG_NAME))
    for name, entry in report.data['sections'].items():
        print(f'[gpu_check] {name}: {entry["status"]}'
              + (f' ({entry["reason"]})' if entry.get('reason') else ''), flush=True)
    print(f'[gpu_check] {osp.join(args.out_dir, JSON_NAME)}, '
          f'{osp.join(args.out_dir, PNG_NAME)}', flush=True)
    return report.data
