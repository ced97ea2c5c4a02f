"""Masks stored as bits: a flat ``uint8`` tensor of ``ceil(numel / 8)`` bytes, as
``numpy.packbits`` lays them out (tickets and checkpoints carry masks this way)."""
import torch

_PACK_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def pack_mask(mask):
    """Pack a boolean mask into bits: a flat ``uint8`` tensor of ``ceil(numel / 8)`` bytes.

    Bits follow ``numpy.packbits`` (big-endian within a byte, row-major over the mask), so
    ``pack_mask(m).numpy()`` equals ``np.packbits(m.numpy())``. The shape is not stored: pass it
    to :func:`unpack_mask`.
    """
    if mask.dtype != torch.bool:
        raise ValueError(f'pack_mask expects a torch.bool mask, got {mask.dtype}')
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor(_PACK_BIT_WEIGHTS, dtype=torch.uint8, device=mask.device)
    return (flat.view(-1, 8).to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed, shape):
    """Inverse of :func:`pack_mask`: a boolean tensor of ``shape`` on ``packed``'s device."""
    shape = torch.Size(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError(f'unpack_mask expects a flat torch.uint8 tensor, got dtype '
                         f'{packed.dtype} with shape {tuple(packed.shape)}')
    numel = shape.numel()
    if packed.numel() != (numel + 7) // 8:
        raise ValueError(f'packed mask has {packed.numel()} bytes, but shape {tuple(shape)} '
                         f'needs {(numel + 7) // 8}')
    weights = torch.tensor(_PACK_BIT_WEIGHTS, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(1) & weights) != 0
    return bits.reshape(-1)[:numel].reshape(shape)
