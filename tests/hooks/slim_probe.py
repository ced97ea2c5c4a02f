"""Test-only hook for the DDP test of slimming during training: at the end of training every
rank reports whether its parameters and buffers (shapes and values) equal rank 0's."""
import torch
from mmengine.dist import all_gather, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


def _same_on_every_rank(tensors):
    shapes = torch.tensor([s for t in tensors for s in t.shape] + [len(tensors)]).double()
    flat = torch.cat([t.detach().double().flatten() for t in tensors])
    digest = torch.cat([shapes, torch.stack(
        [flat.sum(), (flat * torch.arange(len(flat)).double()).sum()])])
    return all(d.shape == digest.shape and torch.equal(d, digest) for d in all_gather(digest))


@HOOKS.register_module()
class SlimModelProbeHook(Hook):
    priority = 'VERY_LOW'

    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        params = _same_on_every_rank(list(model.parameters()))
        buffers = _same_on_every_rank([b for b in model.buffers() if b.is_floating_point()])
        runner.logger.warning(
            f'slim probe: parameters {"identical" if params else "DIFFER"}, buffers '
            f'{"identical" if buffers else "DIFFER"} on {get_world_size()} ranks, wrapper '
            f'{type(runner.model).__name__}')
