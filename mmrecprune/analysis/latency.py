"""Latency of models as they run eagerly (CPU wall clock, or CUDA events on a GPU) and as
they would be deployed on a CPU (used by ``tools/analysis_tools/analyze_ticket.py``, the speed
benchmark and the GPU check)."""
import copy
import statistics
import time

import torch

from mmrecprune.sparsity import example_input


@torch.inference_mode()
def interleaved_latency(models, input_shape, repeats=10, warmup=2, seed=0, device=None,
                        dtype=None, channels_last=False):
    """Median seconds per forward of every model, measured in interleaved rounds.

    On the CPU each call is timed by the wall clock. On a CUDA device each call is bracketed
    by CUDA events (the GPU's own time for the queued work, not the launch), and the device is
    synchronised once per round, after every model has run, before the events are read.

    Args:
        models (dict[str, callable]): Models in eval mode (or any callables), called as
            ``model(x)``.
        input_shape (Sequence[int]): ``(N, C, H, W)``.
        repeats (int): Timed rounds; each round runs every model once, in turn.
        warmup (int): Untimed runs per model first (also what ``torch.compile`` compiles on).
        seed (int): Seed of the random input.
        device (str | torch.device, optional): Where the input is made. Defaults to the CPU.
        dtype (torch.dtype, optional): The input's dtype (the models must match it).
        channels_last (bool): Make the input channels-last (NHWC in memory).

    Returns:
        dict[str, float]: Median latency per model name, in seconds.
    """
    device = torch.device('cpu' if device is None else device)
    x = example_input(input_shape, seed=seed).to(device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cuda = device.type == 'cuda'
    for model in models.values():
        for _ in range(warmup):
            model(x)
    if cuda:
        torch.cuda.synchronize(device)
    times = {name: [] for name in models}
    for _ in range(repeats):
        events = {}
        for name, model in models.items():
            if cuda:
                start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
                start.record()
                model(x)
                end.record()
                events[name] = (start, end)
            else:
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
        if cuda:
            torch.cuda.synchronize(device)
            for name, (start, end) in events.items():
                times[name].append(start.elapsed_time(end) / 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def deployed(model, input_shape):
    """``model`` as it would be deployed on a CPU: BN folded into the convs (MMCV's
    ``fuse_conv_bn``, as ``tools/test.py --fuse-conv-bn`` in MMDetection), channels-last, then
    traced, frozen and ``torch.jit.optimize_for_inference`` (oneDNN: prepacked weights, blocked
    layouts, conv + add + ReLU fused). Eager PyTorch pays the memory-bound BN / ReLU / add on the
    full-width residual stream, and the max-pool, whatever the pruning; deployment removes most
    of that fixed cost. A deep copy is converted; ``model`` is left as it is.
    """
    from mmcv.cnn import fuse_conv_bn
    model = copy.deepcopy(model)
    model.eval()  # not chained: mmdet's ResNet.train() returns None
    model = fuse_conv_bn(model).to(memory_format=torch.channels_last)
    example = torch.randn(*input_shape)
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def latency_ratio(ticket_path, repeats, batch=8, size=56):
    """Dense / slim latency of a ticket's backbones: eager, batch ``batch`` at
    ``size`` x ``size``, one CPU thread, interleaved (the leaderboard's CPU speed-up)."""
    from .ticket_models import load_models
    torch.set_num_threads(1)
    dense, pruned, _ = load_models(ticket_path)
    dense.eval()
    pruned.eval()
    lat = interleaved_latency(dict(dense=dense, slim=pruned), (batch, 3, size, size),
                              repeats=repeats, warmup=3)
    return lat['dense'] / lat['slim']
