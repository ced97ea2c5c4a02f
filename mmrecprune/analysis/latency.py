"""Latency of models as they run eagerly and as they would be deployed on a CPU (used by
``tools/analysis_tools/analyze_ticket.py`` and the speed benchmark)."""
import copy
import statistics
import time

import torch

from mmrecprune.sparsity import example_input


@torch.inference_mode()
def interleaved_latency(models, input_shape, repeats=10, warmup=2, seed=0):
    """Median seconds per forward of every model, measured in interleaved rounds.

    Args:
        models (dict[str, nn.Module]): Models in eval mode, called as ``model(x)``.
        input_shape (Sequence[int]): ``(N, C, H, W)``.
        repeats (int): Timed rounds; each round runs every model once, in turn.
        warmup (int): Untimed runs per model first.

    Returns:
        dict[str, float]: Median latency per model name, in seconds.
    """
    x = example_input(input_shape, seed=seed)
    for model in models.values():
        for _ in range(warmup):
            model(x)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(x)
            times[name].append(time.perf_counter() - start)
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
