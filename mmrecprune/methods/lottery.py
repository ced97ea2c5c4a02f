"""Iterative magnitude pruning with rewinding: the loop behind RecPrune, IMP and the
self-supervised method. Plain PyTorch: the hook only tells it when a round ends."""
import torch

from mmrecprune.sparsity import (apply_masks, check_masks, global_magnitude_masks, init_masks,
                                 pack_mask, prunable_parameters, rewind, sparsity_report,
                                 unpack_mask)

REWIND_MODES = ('pretrained', 'iteration', 'none')


class LotteryTicketPruner:
    """Holds masks, rewind targets and the round count of a lottery-ticket run.

    Args:
        model (nn.Module): the model being pruned (e.g. a classifier with ``backbone.``).
        prune_ratio (float): fraction of the surviving weights removed per round, in (0, 1).
        include / exclude (Sequence[str]): which conv weights are prunable (see
            :func:`~mmrecprune.sparsity.prunable_parameters`).
        rewind_to (str): ``'pretrained'`` (weights at the start of the run), ``'iteration'``
            (weights after ``rewind_iter`` iterations: late resetting) or ``'none'``.
    """

    def __init__(self, model, prune_ratio=0.2, include=('backbone.*',),
                 exclude=('conv1.*', 'stem.*'), rewind_to='pretrained'):
        if not 0.0 < prune_ratio < 1.0:
            raise ValueError(f'prune_ratio must be in (0, 1), got {prune_ratio}')
        if rewind_to not in REWIND_MODES:
            raise ValueError(f'rewind_to must be one of {REWIND_MODES}, got {rewind_to!r}')
        self.params = prunable_parameters(model, include=include, exclude=exclude)
        if not self.params:
            raise ValueError(f'no prunable conv weights match include={include}, '
                             f'exclude={exclude}')
        self.model = model
        self.prune_ratio = prune_ratio
        self.rewind_to = rewind_to
        self.masks = init_masks(self.params)
        self.round = 0
        self.rewind_state = None  # the whole model state (BN, head) to rewind to

    def snapshot(self):
        """Remember the current model state as the rewind target."""
        self.rewind_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def plan(self):
        """The masks of the next round (global magnitude pruning); changes nothing yet, so a
        DDP run can replace them by rank 0's before :meth:`commit`."""
        return global_magnitude_masks(self.params, self.masks, self.prune_ratio)

    @torch.no_grad()
    def commit(self, masks):
        """End the round with ``masks``: rewind the survivors, zero the pruned weights."""
        check_masks(self.params, masks)
        self.masks = masks
        self.round += 1
        if self.rewind_to != 'none':
            if self.rewind_state is None:
                raise RuntimeError('no rewind target stored before the end of the round')
            self.model.load_state_dict(self.rewind_state)
            rewind(self.params, self.rewind_state, self.masks)
        apply_masks(self.params, self.masks)
        return self.masks

    def prune_and_rewind(self):
        """End a round on one process: :meth:`plan` then :meth:`commit`."""
        return self.commit(self.plan())

    @property
    def sparsity(self):
        return sparsity_report(self.masks)['sparsity']

    def state_dict(self):
        """Plain, weights-only-loadable state (packed masks) for checkpoints."""
        return dict(round=self.round,
                    masks={n: pack_mask(m.cpu()) for n, m in self.masks.items()},
                    rewind_state=self.rewind_state)

    def load_state_dict(self, state):
        masks = {n: unpack_mask(bits, self.params[n].shape).to(self.params[n].device)
                 for n, bits in state['masks'].items() if n in self.params}
        check_masks(self.params, masks)
        self.masks = masks
        self.round = int(state['round'])
        self.rewind_state = state.get('rewind_state')
