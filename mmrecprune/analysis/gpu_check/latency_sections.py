"""The GPU check's latency sections: ``slim`` (dense against slim tickets) and ``nm`` (a 2:4
ticket's 1x1 convs and backbone, dense against semi-structured sparse); ``slim`` runs on the
CPU too."""
import copy
import os.path as osp

import torch


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
