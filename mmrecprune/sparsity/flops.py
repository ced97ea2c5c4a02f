"""The project's one FLOPs / parameter counter, plus a side-effect-free forward pass.

Convention (used everywhere in mmrecprune: logs, tickets, README tables):
**FLOPs = multiply-accumulates (MACs)**, counted for

* convolutions: one MAC per (weight, output position) pair, i.e.
  ``N * H_out * W_out * C_out * C_in / groups * k_h * k_w`` for a dense conv
  (transposed convs: per *input* position);
* linear layers: ``rows * in_features * out_features``;
* normalisation layers (BatchNorm, SyncBN, GroupNorm, LayerNorm, InstanceNorm): one MAC per output
  element (the fused scale-and-shift);

while bias additions, activations, pooling and element-wise additions count as zero. This matches
the "GFLOPs" figures usually quoted for ResNets (ResNet-50 at 224x224: about 4.1 G).
Parameters are all ``model.parameters()`` (buffers such as BN running statistics are not counted).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

#: the normalisation layers counted in FLOPs and params (and costed per channel)
NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def inference_forward(model: nn.Module, inputs: Any) -> Any:
    """Run ``model(inputs)`` in eval mode under ``no_grad`` without side effects.

    The training flag of every submodule is saved and restored one by one instead of calling
    ``model.train()``, because backbones such as MMDetection's ResNet override ``train()`` (frozen
    stages, ``norm_eval``) and BN running statistics must not move while we only inspect the model.

    Args:
        model (nn.Module): The model to run.
        inputs (Any): The positional input passed to ``model``.

    Returns:
        Any: Whatever ``model`` returns.
    """
    flags = [(m, m.training) for m in model.modules()]
    for m, _ in flags:
        m.training = False
    try:
        with torch.no_grad():
            return model(inputs)
    finally:
        for m, flag in flags:
            m.training = flag


def _shape_only_output(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Zeros of the output shape of a plain conv / linear / BN layer, or ``None`` where the
    input does not fit it (the real forward then raises the real error)."""
    if isinstance(module, _BatchNorm):
        return torch.zeros_like(x) if x.ndim >= 2 and x.shape[1] == module.num_features else None
    if isinstance(module, nn.Linear):
        fits = x.ndim >= 1 and x.shape[-1] == module.in_features
        return x.new_zeros(*x.shape[:-1], module.out_features) if fits else None
    dims = len(module.kernel_size)
    if x.ndim not in (dims + 1, dims + 2) or x.shape[-dims - 1] != module.in_channels:
        return None
    if module.padding == 'same':
        spatial = list(x.shape[-dims:])
    else:
        pad = (0, ) * dims if module.padding == 'valid' else module.padding
        spatial = [(size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in zip(
            x.shape[-dims:], pad, module.dilation, module.kernel_size, module.stride)]
    if min(spatial) < 1:
        return None
    return x.new_zeros(*x.shape[:-dims - 1], module.out_channels, *spatial)


# layers whose output shape is computed here instead of their arithmetic (only PyTorch's own
# forwards: a subclass with its own forward may do anything, so it runs for real)
_SHAPE_ONLY_FORWARDS = (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward,
                        nn.Linear.forward, _BatchNorm.forward)


def shape_forward(model: nn.Module, inputs: Any) -> Any:
    """:func:`inference_forward` for passes that only read shapes (channel-group tracing, cost
    models): PyTorch's own conv, linear and BN layers return zeros of their output shape
    instead of computing it, which is most of a CNN's forward time; every other operation runs
    as usual (on those zeros). Forward hooks of these layers still see their inputs and
    outputs. Not for models whose control flow depends on activation values."""
    stubbed = [m for m in model.modules() if type(m).forward in _SHAPE_ONLY_FORWARDS
               and 'forward' not in m.__dict__]

    def stub(module):
        def forward(x, *args, **kwargs):
            y = _shape_only_output(module, x) if not args and not kwargs else None
            return type(module).forward(module, x, *args, **kwargs) if y is None else y
        return forward

    for m in stubbed:
        m.forward = stub(m)
    try:
        return inference_forward(model, inputs)
    finally:
        for m in stubbed:
            del m.forward


#: the layers whose calls the channel cost model reads (conv, linear, norm: all that costs FLOPs)
COSTED_LAYERS = (_ConvNd, nn.Linear) + NORM_TYPES


def layer_call(module: nn.Module, args: tuple, output: Any) -> tuple:
    """``(module, input shape, output shape)`` of one call (``None`` for what is no tensor):
    what the cost model needs of a forward, recorded by the channel-group trace so that one
    pass serves both."""
    x = args[0] if args else None
    return (module, x.shape if isinstance(x, torch.Tensor) else None,
            output.shape if isinstance(output, torch.Tensor) else None)


def _weight_count(weight: torch.Tensor, nonzero_only: bool) -> int:
    return int(torch.count_nonzero(weight)) if nonzero_only else weight.numel()


def count_flops_params(model: nn.Module,
                       input_shape: Sequence[int] = (1, 3, 224, 224),
                       nonzero_only: bool = False) -> tuple[int, int]:
    """Count FLOPs (= multiply-accumulates, see module docstring) and parameters.

    FLOPs are measured with forward hooks during one forward pass on a random input, so every
    module that really runs is counted (shared modules once per call) and unused ones are not.

    Args:
        model (nn.Module): The model, e.g. a backbone. It is called as ``model(x)``.
        input_shape (Sequence[int]): Shape of the random input ``x``, batch included. FLOPs scale
            with the batch size. Defaults to ``(1, 3, 224, 224)``.
        nonzero_only (bool): Count only non-zero weights, for unstructured tickets: a conv then
            costs ``N * H_out * W_out * nnz(weight)`` MACs and parameters are ``nnz``. Norm-layer
            FLOPs stay dense. Defaults to False.

    Returns:
        tuple[int, int]: ``(flops, params)``.
    """
    flops = 0

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        nonlocal flops
        if isinstance(module, _ConvNd):
            # every weight is used once per output position (per input position when transposed)
            pos = args[0] if module.transposed else output
            flops += (pos.shape[0] * math.prod(pos.shape[2:]) *
                      _weight_count(module.weight, nonzero_only))
        elif isinstance(module, nn.Linear):
            rows = output.numel() // module.out_features
            flops += rows * _weight_count(module.weight, nonzero_only)
        elif isinstance(output, torch.Tensor):
            flops += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (_ConvNd, nn.Linear) + NORM_TYPES)]
    try:
        param = next(model.parameters(), None)
        x = torch.randn(*input_shape,
                        device=param.device if param is not None else None,
                        dtype=param.dtype if param is not None and param.is_floating_point()
                        else None)
        inference_forward(model, x)
    finally:
        for h in handles:
            h.remove()
    params = sum(_weight_count(p, nonzero_only) for p in model.parameters())
    return int(flops), int(params)


def example_input(input_shape, device=None, seed=0):
    """A random input of ``input_shape`` drawn from its own seeded generator, so tracing,
    FLOPs counting and export checks see the same tensor and the global RNG is left alone."""
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
    return x if device is None else x.to(device)
