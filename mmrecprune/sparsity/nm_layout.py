"""The layout rule of N:M masks (``'2:4'``: at most 2 of every 4 consecutive weights kept):
the groups run along the input channels (:func:`nm_groups`), :func:`nm_violations` checks a
mask set against a pattern, and the last ``in % M`` channels (the tail) stay dense."""
import re

import torch

#: The N:M patterns this package accepts: ``'N:M'`` with ``1 <= N < M <= MAX_NM_GROUP``.
NM_PATTERN_RE = re.compile(r'([1-9][0-9]?):([1-9][0-9]?)')
MAX_NM_GROUP = 32


def parse_nm_pattern(pattern):
    """``(n, m)`` of an N:M pattern string such as ``'2:4'`` (at most ``n`` of every ``m``
    consecutive weights kept; ``1 <= n < m <= MAX_NM_GROUP``); ``ValueError`` naming the value
    otherwise."""
    match = NM_PATTERN_RE.fullmatch(pattern) if type(pattern) is str else None
    n, m = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not match or not 1 <= n < m <= MAX_NM_GROUP:
        raise ValueError(f"an N:M pattern is a string 'N:M' with 1 <= N < M <= {MAX_NM_GROUP} "
                         f"(e.g. '2:4', the one NVIDIA GPUs run sparse), got {pattern!r}")
    return n, m


def nm_groups(tensor, m):
    """The entries of a conv weight ``[out, in, kh, kw]`` (or a linear weight ``[out, in]``) in
    N:M groups: ``m`` consecutive input channels at one output filter and one kernel tap.

    That is the reduction dimension of the conv as a matrix product on channels-last input (a
    1x1 conv: ``x[B*H*W, in] @ W[out, in]^T``; a kxk conv: its im2col matrix with the channels
    innermost, ``(kh, kw, in)``), the layout semi-structured sparse kernels (cuSPARSELt,
    CUTLASS, TensorRT's sparse convs) compress. The last ``in % m`` channels of each filter
    and tap form no whole group: the tail, which N:M masks leave dense.

    Returns:
        tuple[Tensor, Tensor]: ``groups`` ``[G, m]`` and ``tail`` ``[out * kh * kw, in % m]``
        (copies, row-major over ``(out, kh, kw)``); :func:`nm_ungroup` puts them back.
    """
    if tensor.dim() < 2:
        raise ValueError(f'N:M groups need a weight of 2 or more dimensions ([out, in, ...]), '
                         f'got shape {tuple(tensor.shape)}')
    rows = tensor.movedim(1, -1)
    rows = rows.reshape(rows.numel() // max(rows.shape[-1], 1), rows.shape[-1])
    full = rows.shape[1] - rows.shape[1] % m
    return rows[:, :full].reshape(rows.shape[0] * (full // m), m), rows[:, full:]


def nm_ungroup(groups, tail, shape):
    """Inverse of :func:`nm_groups`: the tensor of ``shape`` that ``groups`` and ``tail`` hold."""
    shape = torch.Size(shape)
    moved = (shape[0], *shape[2:], shape[1])
    rows = torch.cat([groups.reshape(tail.shape[0], groups.numel() // max(tail.shape[0], 1)),
                      tail], dim=1)
    return rows.reshape(moved).movedim(-1, 1)


def nm_violations(masks, pattern):
    """``{name: groups keeping more than N}`` for the masks that break the N:M ``pattern``
    (groups: :func:`nm_groups`; the tail of ``in % M`` channels is not checked). Empty when
    every mask satisfies it."""
    n, m = parse_nm_pattern(pattern)
    out = {}
    for name, mask in masks.items():
        groups, _ = nm_groups(mask, m)
        bad = int((groups.sum(dim=1) > n).sum())
        if bad:
            out[name] = bad
    return out


def nm_tails(masks, pattern):
    """``{name: entries in the dense tail}`` for masks whose weight has ``in % M != 0`` input
    channels (those entries form no whole group, so N:M masks keep them)."""
    _, m = parse_nm_pattern(pattern)
    tails = {name: mask.shape[1] % m * (mask.numel() // max(mask.shape[1], 1))
             for name, mask in masks.items()}
    return {name: count for name, count in tails.items() if count}
