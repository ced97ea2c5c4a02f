"""Test-only hook for the DDP tests: rank 1 sees other weights just before a pruning round
ends (so its own plan would differ from rank 0's), and every rank reports at the end whether
its weights equal rank 0's."""
import torch
from mmengine.dist import all_gather, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DivergingRankProbeHook(Hook):
    priority = 'NORMAL'  # before the pruning hooks (LOW) at the end of an epoch

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def after_train_epoch(self, runner):
        if get_rank() == 1:
            with torch.no_grad():
                self._model(runner).backbone.layer1[0].conv1.weight.mul_(100)

    def after_train(self, runner):
        state = [v.double().flatten() for v in self._model(runner).state_dict().values()
                 if torch.is_tensor(v) and v.is_floating_point()]
        flat = torch.cat(state)
        digest = torch.stack([flat.sum(), (flat * torch.arange(len(flat)).double()).sum()])
        same = all(torch.equal(d, digest) for d in all_gather(digest))
        runner.logger.warning(f'probe: weights {"identical" if same else "DIFFER"} on '
                              f'{get_world_size()} ranks')
