"""How a 2:4 cut runs faster: 1x1 convs as semi-structured sparse matrix products.

A 1x1 conv (``groups=1``, no padding) on channels-last input is one matrix product: the input's
pixels are the rows of ``x[B*H*W, C_in]`` (a view, no copy, when ``x`` is channels-last and
the stride is 1), and ``y[B*H*W, C_out] = x @ W[C_out, C_in]^T``. When ``W`` keeps 2 of every 4
consecutive input channels (an N:M mask of pattern ``'2:4'`` along the input channels,
:func:`~mmrecprune.sparsity.nm_groups`), NVIDIA GPUs since Ampere (compute capability 8.0)
run that product on sparse tensor cores: PyTorch's ``torch.sparse.to_sparse_semi_structured``
compresses ``W`` (cuSPARSELt or CUTLASS) and ``F.linear`` dispatches to the sparse kernel.
kxk convs keep their dense kernels (with the mask's zeros): PyTorch has no sparse conv, and an
im2col copy costs more than the sparse product saves.

:class:`SemiStructuredConv2d` is an ``nn.Conv2d`` (same parameters, same state_dict) whose
forward takes the sparse path when it can: gradients off (inference), the input a CUDA tensor
in float16 / bfloat16. Everywhere else (training, CPU, float32) it is the dense conv with the
mask's zeros, which computes the same up to rounding. The compressed weight is cached per
dtype and device (outside the module: copies and state_dicts never hold it) and made again
when the weight changes (its version counter moves).

Plain PyTorch: no runner, no MMEngine.
"""
import weakref

import torch
import torch.nn.functional as F
from torch import nn

#: Input dtypes the sparse path takes (the semi-structured kernels' floating types).
SPARSE_DTYPES = (torch.float16, torch.bfloat16)
#: The one N:M pattern the hardware runs.
SEMI_STRUCTURED_PATTERN = '2:4'
#: conv -> ((dtype, device, weight version), compressed weight); held outside the module, so
#: copies (EMA, deployment) and state_dicts never carry the compressed tensor
_COMPRESSED = weakref.WeakKeyDictionary()


def conv1x1_as_matmul(x, weight, bias=None, stride=(1, 1), linear=F.linear):
    """A 1x1 conv (``groups=1``, ``padding=0``) as one matrix product over the pixels.

    Args:
        x (Tensor): ``[B, C_in, H, W]``; channels-last makes the pixel rows a view.
        weight (Tensor): ``[C_out, C_in]`` (a dense tensor, or one that
            ``to_sparse_semi_structured`` compressed).
        bias (Tensor, optional): ``[C_out]``.
        stride (tuple[int, int]): The conv's stride (a strided 1x1 conv reads every s-th
            pixel).
        linear (callable): ``linear(rows, weight, bias)``; ``F.linear`` by default.

    Returns:
        Tensor: ``[B, C_out, H', W']``, channels-last (a view of the product's rows).
    """
    stride = tuple(stride)
    if stride != (1, 1):
        x = x[:, :, ::stride[0], ::stride[1]]
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    out = linear(rows, weight, bias)
    return out.reshape(n, h, w, out.shape[-1]).permute(0, 3, 1, 2)


def semi_structured_unavailable(device=None):
    """Why this machine cannot run semi-structured sparse products (a sentence), or None if it
    can: PyTorch's ``torch.sparse.to_sparse_semi_structured``, a CUDA device, and compute
    capability 8.0 or newer (sparse tensor cores: Ampere, Ada, Hopper, Blackwell)."""
    if not hasattr(torch.sparse, 'to_sparse_semi_structured'):
        return (f'this PyTorch ({torch.__version__}) has no '
                'torch.sparse.to_sparse_semi_structured (PyTorch 2.1 or newer has)')
    if not torch.cuda.is_available():
        return f'this machine has no CUDA device (PyTorch {torch.__version__})'
    device = torch.device('cuda') if device is None else torch.device(device)
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return (f'{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has '
                'no sparse tensor cores; they start with Ampere (8.0)')
    return None


def semi_structured_skip_reason(conv, mask=None):
    """Why ``conv`` cannot take the sparse path (a phrase), or None: it must be a 1x1
    ``nn.Conv2d`` with ``groups=1`` and no padding, whose ``mask`` (if given) keeps 2 of every
    4 input channels with no dense tail."""
    from .nm_layout import nm_violations
    if not isinstance(conv, nn.Conv2d):
        return f'a {type(conv).__name__}, not a Conv2d'
    if conv.kernel_size != (1, 1):
        return f'a {conv.kernel_size[0]}x{conv.kernel_size[1]} conv (dense kernel with the mask)'
    if conv.groups != 1 or tuple(conv.padding) != (0, 0) or conv.padding_mode != 'zeros':
        return 'a grouped or padded 1x1 conv'
    if conv.in_channels % 4:
        return f'{conv.in_channels} input channels, not a multiple of 4'
    if mask is not None and nm_violations({'weight': mask}, SEMI_STRUCTURED_PATTERN):
        return 'its mask is not 2:4 along the input channels'
    return None


class SemiStructuredConv2d(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` whose inference runs as a semi-structured sparse product on CUDA.

    Not built directly: :func:`enable_semi_structured` turns existing convs into it (their
    parameters, buffers, hooks and state_dict keys stay as they are). See the module docstring
    for when the sparse path is taken; everywhere else this is the dense conv.
    """

    def forward(self, x):
        if torch.is_grad_enabled() or not x.is_cuda or x.dtype not in SPARSE_DTYPES \
                or self.__dict__.get('semi_structured_error'):
            return super().forward(x)
        weight = self.sparse_weight(x.dtype, x.device)
        if weight is None:
            return super().forward(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return conv1x1_as_matmul(x, weight, bias, self.stride)

    @torch.no_grad()
    def sparse_weight(self, dtype, device):
        """The weight compressed by ``to_sparse_semi_structured`` for ``dtype`` / ``device``
        (cached; made again when the weight changed), or None if it cannot be (the reason is
        kept in ``semi_structured_error`` and this conv stays dense from then on)."""
        key = (dtype, device, self.weight._version)
        cached = _COMPRESSED.get(self)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            dense = self.weight.detach().reshape(self.out_channels, self.in_channels)
            sparse = torch.sparse.to_sparse_semi_structured(dense.to(device=device, dtype=dtype))
        except (RuntimeError, ValueError, NotImplementedError) as err:
            self.semi_structured_error = ' '.join(str(err).split())[:300]
            return None
        _COMPRESSED[self] = (key, sparse)
        return sparse


def enable_semi_structured(module, masks=None):
    """Turn every 1x1 conv of ``module`` that can take the sparse path into a
    :class:`SemiStructuredConv2d`, in place.

    Args:
        module (nn.Module): e.g. a ticket's backbone.
        masks (dict[str, BoolTensor], optional): The N:M masks by parameter name
            (``'layer1.0.conv1.weight'``); only convs with a 2:4 mask are turned. None: every
            eligible 1x1 conv (its weight must then hold the 2:4 zeros itself).

    Returns:
        dict[str, str]: Per conv (module name), ``'sparse'`` or why it stays dense.
    """
    report = {}
    for name, conv in module.named_modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        key = f'{name}.weight' if name else 'weight'
        if masks is not None and key not in masks:
            report[name] = 'not pruned (no mask)'
            continue
        reason = semi_structured_skip_reason(conv, None if masks is None else masks[key])
        if reason is None:
            conv.__class__ = SemiStructuredConv2d
            report[name] = 'sparse'
        else:
            report[name] = reason
    return report


def semi_structured_report(module):
    """Per :class:`SemiStructuredConv2d` of ``module``: ``'sparse'``, ``'not compressed yet'``
    (no CUDA half-precision inference has run) or why compressing failed."""
    out = {}
    for name, conv in module.named_modules():
        if isinstance(conv, SemiStructuredConv2d):
            error = conv.__dict__.get('semi_structured_error')
            out[name] = (f'dense: {error}' if error else 'sparse'
                         if conv in _COMPRESSED else
                         'not compressed yet')
    return out
