"""Random masks for the controls of lottery-ticket experiments."""
import torch


def random_masks_like(masks, seed):
    """Masks with the same number of kept entries per tensor as ``masks``, at random positions
    (seeded): the random-mask control of a ticket."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, mask in masks.items():
        kept = int(mask.sum())
        order = torch.randperm(mask.numel(), generator=generator)
        new = torch.zeros(mask.numel(), dtype=torch.bool)
        new[order[:kept]] = True
        out[name] = new.view(mask.shape).to(mask.device)
    return out
