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
"""
import argparse
import contextlib
import copy
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time
import traceback

import torch

from mmrecprune.cli import CLIError, check_output_path, check_work_dir

SECTIONS = ('amp', 'retinanet', 'ddp', 'slim', 'nm')
DTYPES = dict(bfloat16=torch.bfloat16, float16=torch.float16, float32=torch.float32)
MODES = ('eager', 'compile')
#: seconds a section needs at least (the defaults' sizes on one H200); it is skipped when less
#: is left
SECTION_SECONDS = dict(amp=60, retinanet=30, ddp=40, slim=60, nm=45)
JSON_NAME, PNG_NAME = 'gpu_check.json', 'gpu_check.png'
RETINANET_STEPS = 3  # optimizer steps per ticket and AMP dtype


#: two IMP rounds of 20 % on the tiny IMP config: the runs of the amp and ddp sections
IMP_CONFIG = 'configs/imp/imp_r18-w16_7r-1e_fashionmnist.py'
TWO_IMP_ROUNDS = """
rounds = 2
custom_hooks = [dict(type='LotteryTicketHook', rounds=2, epochs_per_round=1,
                     example_input_shape=(1, 3, 32, 32),
                     pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2,
                                 rewind_to='pretrained', method='imp'))]
train_cfg = dict(max_epochs=2, val_interval=1)
"""

def _repo_root():
    """The checkout whose tools/ and configs/ the checks run: the one this module is in, else
    the working directory (gpu_check.sh runs from the checkout's root)."""
    here = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    return here if osp.isfile(osp.join(here, 'tools', 'train.py')) else os.getcwd()


REPO = _repo_root()


# -- arguments ----------------------------------------------------------------------------------
def build_parser():
    parser = argparse.ArgumentParser(
        prog='gpu_check.py', description=__doc__.splitlines()[0])
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


# -- the report ---------------------------------------------------------------------------------
class Deadline:
    """The time left of ``budget`` seconds from now."""

    def __init__(self, budget):
        self.end = time.monotonic() + budget

    def left(self):
        return self.end - time.monotonic()

    def allows(self, seconds):
        return self.left() >= seconds


class Report:
    """The one JSON of a run: machine, arguments, and per section its status (``ok``,
    ``failed``, ``skipped``), seconds, checks, figures and notes. :meth:`write` replaces the file
    atomically; it is called after every section."""

    def __init__(self, path, args=None):
        self.path = path
        self.data = dict(machine=machine(), args=dict(vars(args)) if args else {},
                         started=time.strftime('%Y-%m-%d %H:%M:%S'), sections={})

    @contextlib.contextmanager
    def section(self, name, deadline=None, needs=0.0, skip=None):
        """Run the body as section ``name``; skip it (yield None) when ``skip`` gives a reason
        or fewer than ``needs`` seconds are left; record an exception as ``failed``."""
        entry = dict(status='ok', checks={}, figures={}, notes=[])
        self.data['sections'][name] = entry
        if skip is None and deadline is not None and not deadline.allows(needs):
            skip = f'{deadline.left():.0f} s left of the budget, the section needs ~{needs:.0f}'
        if skip:
            entry.update(status='skipped', reason=skip)
            self.write()
            yield None
            return
        start = time.monotonic()
        try:
            yield entry
            failed = [k for k, v in entry['checks'].items() if v is False]
            if failed:
                entry['status'] = 'failed'
                entry['reason'] = f'checks failed: {failed}'
        except Exception as err:  # noqa: BLE001  a section's failure is a result
            entry.update(status='failed', reason=f'{type(err).__name__}: '
                                                 f'{" ".join(str(err).split())[:500]}',
                         traceback=traceback.format_exc()[-3000:])
        finally:
            entry['seconds'] = round(time.monotonic() - start, 1)
            self.write()

    def write(self):
        os.makedirs(osp.dirname(osp.abspath(self.path)), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=osp.dirname(osp.abspath(self.path)), suffix='.tmp')
        with os.fdopen(fd, 'w') as f:
            json.dump(self.data, f, indent=1, default=_jsonable)
        os.replace(tmp, self.path)


def _jsonable(value):
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return repr(value)


def machine():
    """The machine in words: the GPU, its capability, driver-side versions, CPU threads."""
    info = dict(torch=torch.__version__, cuda=torch.version.cuda, python=sys.version.split()[0],
                cpu_threads=torch.get_num_threads())
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0),
                    capability='.'.join(map(str, torch.cuda.get_device_capability(0))),
                    gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory
                                         / 2 ** 30, 1),
                    cudnn=torch.backends.cudnn.version())
    for name in ('mmengine', 'mmcv', 'mmdet', 'torch_pruning'):
        try:
            from importlib.metadata import version
            info[name] = version(name.replace('_', '-'))
        except Exception:  # noqa: BLE001
            info[name] = None
    return info


# -- latency ------------------------------------------------------------------------------------
def latency_table(models, input_size, batch_sizes, modes, device, dtype, repeats, warmup,
                  deadline=None, reference='dense', notes=None):
    """Rows ``dict(mode, batch, model, ms, speedup)`` (speedup: ``reference``'s time over the
    model's, measured in the same interleaved rounds) for every mode and batch size.

    ``models``: name -> module (eval mode, on ``device`` in ``dtype``, channels-last) or
    callable. ``'compile'`` wraps each in ``torch.compile`` once (it recompiles per batch
    size). A (mode, batch) whose time is not left in ``deadline`` is skipped with a note.
    """
    from mmrecprune.analysis.latency import interleaved_latency
    rows = []
    for mode in modes:
        timed = models if mode == 'eager' else {n: torch.compile(m) for n, m in models.items()}
        for batch in batch_sizes:
            if deadline is not None and not deadline.allows(15 if mode == 'eager' else 60):
                if notes is not None:
                    notes.append(f'{mode} batch {batch}: skipped, {deadline.left():.0f} s left')
                continue
            try:
                lat = interleaved_latency(timed, (batch, 3, input_size, input_size), repeats,
                                          warmup, device=device, dtype=dtype,
                                          channels_last=True)
            except Exception as err:  # noqa: BLE001  e.g. a compile failure: noted, go on
                if notes is None:
                    raise
                notes.append(f'{mode} batch {batch}: {type(err).__name__}: '
                             f'{" ".join(str(err).split())[:300]}')
                continue
            for name, seconds in lat.items():
                rows.append(dict(mode=mode, batch=batch, model=name, ms=1e3 * seconds,
                                 speedup=lat[reference] / seconds))
    return rows


def to_device(model, device, dtype):
    model = model.to(device=device, dtype=dtype).to(memory_format=torch.channels_last)
    model.eval()
    return model


def slim_section(entry, args, deadline, device, dtype):
    """Dense vs slim ResNet tickets (ours, Torch-Pruning's) at ``args.flops``."""
    from mmdet.models.backbones import ResNet

    from mmrecprune.analysis.slim_baselines import slim_l1_uniform, torch_pruning_at_flops
    from mmrecprune.sparsity import count_flops_params
    shape = (1, 3, args.input_size, args.input_size)
    torch.manual_seed(0)
    dense = ResNet(depth=args.depth)
    dense.eval()
    dense_flops = count_flops_params(dense, shape)[0]
    models, flops = {'dense': dense}, {'dense': dense_flops}
    tp = None
    if not args.no_torch_pruning:
        try:
            import torch_pruning as tp
        except ImportError as err:
            entry['notes'].append(f'Torch-Pruning not compared: {err} (carry its wheel: '
                                  'tools/benchmarks/gpu_check.sh download)')
    for fraction in args.flops:
        ours = copy.deepcopy(dense)
        slim_l1_uniform(ours, shape, fraction, args.round_to)
        name = f'ours -{round(100 * fraction)}%'
        models[name], flops[name] = ours, count_flops_params(ours, shape)[0]
        if tp is not None:
            found = torch_pruning_at_flops(tp, dense, shape, flops[name], args.round_to)
            tp_name = f'torch_pruning -{round(100 * fraction)}%'
            models[tp_name], flops[tp_name] = found['model'], found['flops']
    entry['figures']['flops_ratio'] = {n: f / dense_flops for n, f in flops.items()}
    models = {n: to_device(m, device, dtype) for n, m in models.items()}
    rows = latency_table(models, args.input_size, args.batch_sizes, args.modes, device, dtype,
                         args.repeats, args.warmup, deadline, notes=entry['notes'])
    for row in rows:
        row['ideal'] = dense_flops / flops[row['model']]
    entry['figures']['latency'] = rows
    entry['checks']['measured'] = bool(rows)


def nm_section(entry, args, deadline, device, dtype, work):
    """A 2:4 ticket's 1x1 convs and backbone, dense vs semi-structured sparse."""
    import torch.nn.functional as F

    from mmrecprune.models import build_backbone_from_ticket
    from mmrecprune.sparsity import (SemiStructuredConv2d, conv1x1_as_matmul,
                                     semi_structured_report)
    from mmrecprune.testing.sources import export_test_ticket
    from mmrecprune.analysis.latency import interleaved_latency
    cfg = dict(type='mmdet.ResNet', depth=args.depth, out_indices=[0, 1, 2, 3])
    ticket = export_test_ticket(osp.join(work, 'nm_2to4.pth'), cfg,
                                dict(type='OneShotMagnitudePruner', pattern='2:4',
                                     include=('*', ), exclude=('conv1.*', )),
                                input_shape=(1, 3, args.input_size, args.input_size))
    dense = to_device(build_backbone_from_ticket(ticket), device, dtype)
    sparse = to_device(build_backbone_from_ticket(ticket, semi_structured=True), device, dtype)
    # outputs: the sparse kernels against the dense masked convs, same weights and input
    x = torch.randn(8, 3, args.input_size, args.input_size, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        outs_dense, outs_sparse = dense(x), sparse(x)
    diffs = [float(((a.float() - b.float()).abs().max() / a.float().abs().max()))
             for a, b in zip(outs_dense, outs_sparse)]
    entry['figures']['max_relative_difference_per_stage'] = diffs
    entry['checks']['outputs_match'] = max(diffs) < 5e-2
    layers = semi_structured_report(sparse)
    entry['figures']['layers'] = layers
    entry['checks']['all_1x1_sparse'] = bool(layers) and all(v == 'sparse'
                                                             for v in layers.values())
    # per 1x1 conv (distinct shapes): cuDNN conv, dense matmul, sparse matmul
    shapes = {}

    def record(name):
        def hook(module, inputs):  # returns None: the inputs stay as they are
            shapes.setdefault(name, tuple(inputs[0].shape))
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in sparse.named_modules()
             if isinstance(m, SemiStructuredConv2d)]
    with torch.inference_mode():
        sparse(x[:1])
    for h in hooks:
        h.remove()
    per_layer, seen = [], set()
    modules = dict(sparse.named_modules())
    for batch in args.nm_batch_sizes:
        for name, (_, c, h, w) in shapes.items():
            conv = modules[name]
            key = (batch, c, conv.out_channels, h, w, conv.stride)
            if key in seen:
                continue
            seen.add(key)
            if not deadline.allows(20):
                entry['notes'].append(f'per-layer timing stopped at {len(per_layer)} shapes: '
                                      'time')
                break
            weight = conv.weight.detach()
            sparse_weight = conv.sparse_weight(dtype, torch.device(device))
            if sparse_weight is None:
                continue
            w2d = weight.reshape(conv.out_channels, c)
            calls = dict(
                conv=lambda t, weight=weight, conv=conv: F.conv2d(t, weight, None, conv.stride),
                dense_matmul=lambda t, w2d=w2d, conv=conv: conv1x1_as_matmul(t, w2d, None,
                                                                             conv.stride),
                sparse_matmul=lambda t, s=sparse_weight, conv=conv: conv1x1_as_matmul(
                    t, s, None, conv.stride))
            lat = interleaved_latency(calls, (batch, c, h, w), args.repeats, args.warmup,
                                      device=device, dtype=dtype, channels_last=True)
            per_layer.append(dict(layer=name, batch=batch, in_channels=c,
                                  out_channels=conv.out_channels, hw=[h, w],
                                  stride=list(conv.stride),
                                  **{f'{k}_ms': 1e3 * v for k, v in lat.items()},
                                  speedup_vs_conv=lat['conv'] / lat['sparse_matmul'],
                                  speedup_vs_dense_matmul=lat['dense_matmul']
                                  / lat['sparse_matmul']))
    entry['figures']['per_layer'] = per_layer
    rows = latency_table({'dense (mask)': dense, '2:4 sparse': sparse}, args.input_size,
                         args.nm_batch_sizes, args.modes, device, dtype, args.repeats,
                         args.warmup, deadline, reference='dense (mask)',
                         notes=entry['notes'])
    entry['figures']['backbone'] = rows
    entry['checks']['measured'] = bool(rows)


# -- correctness under AMP and DDP (CUDA only) -------------------------------------------------
def write_synthetic_fashion_mnist(folder, num_train=256, num_test=64, seed=0):
    """The four Fashion-MNIST IDX files with random images and labels (the checks test the
    mechanics, not accuracy; the GPU machine has no data sets). Returns ``folder``."""
    import numpy as np
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for prefix, n in (('train', num_train), ('t10k', num_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, (n, ), dtype=np.uint8)
        for name, array in ((f'{prefix}-images-idx3-ubyte', images),
                            (f'{prefix}-labels-idx1-ubyte', labels)):
            header = bytes([0, 0, 8, array.ndim]) + b''.join(
                int(d).to_bytes(4, 'big') for d in array.shape)
            with open(osp.join(folder, name), 'wb') as f:
                f.write(header + array.tobytes())
    return folder


TINY_RUN = """
model = dict(backbone=dict(base_channels=16), in_channels=128)
_pipeline = [dict(type='mmcv.Resize', scale=(32, 32)), dict(type='PackClsInputs')]
train_dataloader = dict(batch_size=32, dataset=dict(indices=128, pipeline=_pipeline))
val_dataloader = dict(batch_size=64, dataset=dict(indices=64, pipeline=_pipeline))
test_dataloader = val_dataloader
load_from = None
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=1))
"""


def tool_env(work):
    """The environment of the repo tools the checks run: a synthetic Fashion-MNIST under
    ``work``, this checkout on PYTHONPATH, this Python first on PATH (dist_train.sh calls
    ``python``)."""
    data = write_synthetic_fashion_mnist(osp.join(work, 'fashion_mnist'))
    return dict(os.environ, FASHION_MNIST_ROOT=data, PYTHONUNBUFFERED='1',
                PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
                PATH=osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))


def tiny_config(folder, name, base, extra):
    """A config at ``folder/name`` that shrinks the repo's ``base`` and appends ``extra``."""
    path = osp.join(folder, name)
    with open(path, 'w') as f:
        f.write(f"_base_ = '{osp.join(REPO, base)}'\n" + TINY_RUN + extra)
    return path


def run_repo_tool(cmd, env, log_path):
    """Run a repo tool (``cmd`` relative to the repo); its output goes to ``log_path``; raise
    with the log's tail if it fails."""
    with open(log_path, 'w') as log:
        result = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=300)
    if result.returncode:
        tail = open(log_path).read()[-2000:]
        raise RuntimeError(f'{" ".join(cmd[:4])} ... exited {result.returncode}:\n{tail}')
    return open(log_path).read()


def checkpoint_state(path):
    from mmrecprune.fileio import load_mmengine_checkpoint
    ckpt = load_mmengine_checkpoint(path, map_location='cpu')
    return ckpt['state_dict'], ckpt


def masks_hold(state, ticket, prefix='backbone.'):
    """``(pruned entries hold exactly 0 / their fill, kept entries moved somewhere)``."""
    exact, moved = True, 0
    for name, mask in ticket.masks.items():
        weight = state[prefix + name].float()
        fill = ticket.fill_values.get(name)
        expected = torch.zeros_like(weight) if fill is None else \
            torch.broadcast_to(fill.float(), weight.shape)
        exact &= bool(torch.equal(weight[~mask], expected[~mask]))
        moved += int((weight[mask] != ticket.state_dict[name].float()[mask]).sum())
    return exact, moved > 0


def frozen_unchanged(state, ticket, prefixes=('conv1.', 'bn1.', 'layer1.'), prefix='backbone.'):
    """Whether the frozen stages' weights (stem and stage 1) equal the ticket's."""
    names = [n for n in ticket.state_dict if n.startswith(prefixes)
             and ticket.state_dict[n].is_floating_point() and 'num_batches' not in n
             and 'running_' not in n]
    return bool(names) and all(torch.equal(state[prefix + n].float(),
                                           ticket.state_dict[n].float()) for n in names)


def amp_section(entry, args, work, env):
    """``tools/train.py --amp``: a ticket classifier (fills, frozen stage 1) per AMP dtype and
    an IMP pruning run (fp16)."""
    from mmrecprune.testing.sources import ONE_SHOT_70_FILLED, export_test_ticket
    from mmrecprune.tickets import load_ticket
    ticket_path = export_test_ticket(
        osp.join(work, 'filled_r18.pth'),
        dict(type='mmdet.ResNet', depth=18, base_channels=16, out_indices=[3]),
        ONE_SHOT_70_FILLED, input_shape=(1, 3, 32, 32))
    ticket = load_ticket(ticket_path)
    config = tiny_config(work, 'ticket_cls.py',
                         'configs/selfsup/label-retrain_r18-w16-ticket_fashionmnist.py', f"""
model = dict(backbone=dict(_delete_=True, type='mmrecprune.PrunedBackbone',
                           ticket={ticket_path!r}, out_indices=(3, ), frozen_stages=1))
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = []
""")
    for name in args.amp_dtypes:
        run = osp.join(work, f'ticket_{name}')
        run_repo_tool([sys.executable, 'tools/train.py', config, '--amp', '--work-dir', run,
                  '--cfg-options', f'optim_wrapper.dtype={name}'], env,
                 osp.join(work, f'ticket_{name}.log'))
        state, ckpt = checkpoint_state(osp.join(run, 'epoch_1.pth'))
        exact, moved = masks_hold(state, ticket)
        entry['checks'][f'ticket_{name}_fills_exact'] = exact
        entry['checks'][f'ticket_{name}_kept_weights_trained'] = moved
        entry['checks'][f'ticket_{name}_frozen_stages_unchanged'] = frozen_unchanged(state,
                                                                                     ticket)
        entry['figures'][f'ticket_{name}_optimizer_keys'] = sorted(ckpt.get('optimizer', {}))
    config = tiny_config(work, 'imp_amp.py', IMP_CONFIG, TWO_IMP_ROUNDS)
    run = osp.join(work, 'imp_amp')
    run_repo_tool([sys.executable, 'tools/train.py', config, '--amp', '--work-dir', run], env,
                  osp.join(work, 'imp_amp.log'))
    ticket = load_ticket(osp.join(run, 'tickets', 'round_2.pth'))
    state, ckpt = checkpoint_state(osp.join(run, 'epoch_2.pth'))
    exact = all(not state['backbone.' + n][~m].any() for n, m in ticket.masks.items())
    entry['checks']['imp_amp_pruned_entries_zero'] = exact
    entry['checks']['imp_amp_sparsity_0.36'] = abs(ticket.meta['sparsity'] - 0.36) < 1e-3
    # AmpOptimWrapper (and so AmpPruningOptimWrapper) saves its loss scaler's state
    entry['checks']['imp_amp_loss_scaler_saved'] = 'loss_scaler' in ckpt.get('optimizer', {})
    entry['notes'].append('classifier: a ResNet-18-w16 ticket, 70 % pruned with non-zero fill '
                          'values, frozen_stages=1; IMP: 2 rounds of 20 %, tools/train.py --amp')


def pure_pytorch_focal_loss():
    """If mmcv was built without its ops (``MMCV_WITH_OPS=0``; gpu_check.sh's stub ``_ext``),
    a context that swaps mmdet's CUDA focal loss for mmdet's own PyTorch version (the one it
    uses on the CPU); otherwise a context that does nothing. Returns ``(context, note)``."""
    import mmcv
    ext = sys.modules.get('mmcv._ext')
    if ext is None:
        try:
            import mmcv._ext as ext  # noqa: F811
        except ImportError:
            ext = None
    if ext is not None and not getattr(ext, 'GPU_CHECK_STUB', False):
        return contextlib.nullcontext(), None
    import torch.nn.functional as F
    from mmdet.models.losses import focal_loss

    def sigmoid_focal_loss(pred, target, weight=None, gamma=2.0, alpha=0.25,
                           reduction='mean', avg_factor=None):
        one_hot = F.one_hot(target, num_classes=pred.size(1) + 1)[:, :pred.size(1)]
        return focal_loss.py_sigmoid_focal_loss(pred, one_hot.type_as(pred), weight, gamma,
                                                alpha, reduction, avg_factor)

    @contextlib.contextmanager
    def patched():
        original = focal_loss.sigmoid_focal_loss
        focal_loss.sigmoid_focal_loss = sigmoid_focal_loss
        try:
            yield
        finally:
            focal_loss.sigmoid_focal_loss = original

    return patched(), (f'mmcv {mmcv.__version__} without ops: the focal loss ran as mmdet\'s '
                       'PyTorch version (py_sigmoid_focal_loss)')


def retinanet_section(entry, args, work, device):
    """mmdet's shipped RetinaNet, backbone replaced by R50 tickets, steps under AMP."""
    import mmdet
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import AmpOptimWrapper
    from mmengine.registry import DefaultScope
    from mmdet.testing import demo_mm_inputs

    from mmrecprune.registry import MODELS
    from mmrecprune.testing.sources import ONE_SHOT_70_FILLED, export_test_ticket
    from mmrecprune.tickets import load_ticket
    base = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'retinanet',
                    'retinanet_r50_fpn_1x_coco.py')
    r50 = dict(type='mmdet.ResNet', depth=50, out_indices=[3])
    tickets = dict(
        filled=export_test_ticket(osp.join(work, 'filled_r50.pth'), r50, ONE_SHOT_70_FILLED),
        nm=export_test_ticket(osp.join(work, 'nm_r50.pth'), r50,
                              dict(type='OneShotMagnitudePruner', pattern='2:4',
                                   include=('*', ), exclude=('conv1.*', ))))
    context, note = pure_pytorch_focal_loss()
    if note:
        entry['notes'].append(note)
    # a context, not init_default_scope: the process's default scope is left as it was
    with DefaultScope.overwrite_default_scope('mmdet'):
        for kind, path in tickets.items():
            ticket = load_ticket(path)
            for name in args.amp_dtypes:
                cfg = Config.fromfile(base)
                cfg.model.backbone = dict(type='mmrecprune.PrunedBackbone', ticket=path,
                                          out_indices=(0, 1, 2, 3), frozen_stages=1,
                                          norm_eval=True)
                model = revert_sync_batchnorm(MODELS.build(cfg.model)).to(device)
                model.init_weights()
                model.train()
                optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                            lr=0.01, momentum=0.9, weight_decay=1e-4)
                wrapper = AmpOptimWrapper(optimizer=optimizer, dtype=name)
                losses = []
                for step in range(RETINANET_STEPS):
                    packed = demo_mm_inputs(2, [(3, 128, 128)] * 2, num_items=[3, 2],
                                            num_classes=80)
                    data = model.data_preprocessor(packed, True)
                    with wrapper.optim_context(model), context:
                        loss, _ = model.parse_losses(model(**data, mode='loss'))
                    wrapper.update_params(loss)
                    losses.append(float(loss))
                state = {f'backbone.{k}': v.detach().cpu()
                         for k, v in model.backbone.state_dict().items()}
                exact, moved = masks_hold(state, ticket)
                entry['checks'][f'{kind}_{name}_masks_exact'] = exact
                entry['checks'][f'{kind}_{name}_kept_weights_trained'] = moved
                entry['checks'][f'{kind}_{name}_frozen_stages_unchanged'] = frozen_unchanged(
                    state, ticket)
                entry['checks'][f'{kind}_{name}_losses_finite'] = all(
                    map(lambda v: v == v and abs(v) != float('inf'), losses))
                entry['figures'][f'{kind}_{name}_losses'] = losses
                if kind == 'nm':
                    from mmrecprune.sparsity import nm_violations
                    entry['checks'][f'nm_{name}_still_2to4'] = not nm_violations(
                        {n: state['backbone.' + n] != 0 for n in ticket.masks}, '2:4')


def ddp_section(entry, args, work, env):
    """``tools/dist_train.sh CONFIG 1``: NCCL, one process, two IMP rounds through the hooks'
    DDP path."""
    from mmrecprune.tickets import load_ticket
    config = tiny_config(work, 'imp_ddp.py', IMP_CONFIG, TWO_IMP_ROUNDS)
    run = osp.join(work, 'ddp')
    env = dict(env, PORT=str(29500 + os.getpid() % 1000))
    log = run_repo_tool(['bash', 'tools/dist_train.sh', config, '1', '--work-dir', run], env,
                   osp.join(work, 'ddp.log'))
    ticket = load_ticket(osp.join(run, 'tickets', 'round_2.pth'))
    entry['checks']['ddp_ticket_sparsity_0.36'] = abs(ticket.meta['sparsity'] - 0.36) < 1e-3
    entry['checks']['ddp_launcher_pytorch'] = 'launcher: pytorch' in log or \
        "launcher='pytorch'" in log or 'Distributed training: True' in log
    # NCCL: MMEngine's own process group and DDP wrapper (on a machine without a GPU,
    # tools/train.py starts gloo and wraps with CPUDistributedDataParallel instead)
    entry['checks']['ddp_backend_nccl'] = "'backend': 'nccl'" in log and \
        'CPUDistributedDataParallel' not in log
    entry['notes'].append('world size 1 (one GPU): rank_sync runs its path, but its broadcast '
                          'and the digest comparison return at once; checked here: NCCL '
                          'initialisation, the DDP wrapper, the hooks unwrapping it, tickets')


# -- the plot -----------------------------------------------------------------------------------
def plot(report, path):
    """One PNG: slim speed-ups, the 2:4 backbone's, and the 2:4 per-layer ones."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sections = report['sections']
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    panels = (
        ('slim: speed-up over dense', sections.get('slim', {}).get('figures', {})
         .get('latency', []), 'dense'),
        ('2:4 backbone: speed-up over dense (mask)', sections.get('nm', {}).get('figures', {})
         .get('backbone', []), 'dense (mask)'))
    for ax, (title, rows, reference) in zip(axes[:2], panels):
        rows = [r for r in rows if r['model'] != reference]
        if not rows:
            ax.text(0.5, 0.5, 'not measured', ha='center', va='center')
            ax.set_title(title, fontsize=9)
            continue
        cases = list(dict.fromkeys((r['mode'], r['batch']) for r in rows))
        names = list(dict.fromkeys(r['model'] for r in rows))
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            for i, case in enumerate(cases):
                row = next((r for r in rows if (r['mode'], r['batch']) == case
                            and r['model'] == name), None)
                if row is None:
                    continue
                x = i + (j - (len(names) - 1) / 2) * width
                ax.bar(x, row['speedup'], width, color=f'C{j}', label=name if i == 0 else None)
                if 'ideal' in row:
                    ax.plot([x - width / 2, x + width / 2], [row['ideal']] * 2, 'k--', lw=1)
        ax.axhline(1.0, color='grey', lw=0.8)
        ax.set_xticks(range(len(cases)), [f'{m}\nbatch {b}' for m, b in cases], fontsize=8)
        ax.set_ylabel('speed-up (x)')
        ax.set_title(title + ('; dashes: ideal (FLOPs)' if reference == 'dense' else ''),
                     fontsize=9)
        ax.legend(fontsize=7)
    layers = sections.get('nm', {}).get('figures', {}).get('per_layer', [])
    ax = axes[2]
    if layers:
        labels = [f'{r["in_channels"]}->{r["out_channels"]} {r["hw"][0]}x{r["hw"][1]} '
                  f'b{r["batch"]}' for r in layers]
        ax.barh(range(len(layers)), [r['speedup_vs_conv'] for r in layers], color='C0',
                label='vs cuDNN conv')
        ax.plot([r['speedup_vs_dense_matmul'] for r in layers], range(len(layers)), 'k|',
                ms=8, label='vs dense matmul')
        ax.axvline(1.0, color='grey', lw=0.8)
        ax.set_yticks(range(len(layers)), labels, fontsize=6)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, 'not measured', ha='center', va='center')
    ax.set_title('2:4 per 1x1 conv: sparse speed-up', fontsize=9)
    m = report['machine']
    fig.suptitle(f'{m.get("gpu", "CPU")} (torch {m["torch"]}), {report["args"].get("dtype")}, '
                 'channels-last', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------------
def main(argv=None):
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
