"""The structured baselines on PSAP's schedule and soft masks: one ratio for every group
(Li et al. 2017, "Pruning Filters for Efficient ConvNets") or one ranking across groups.

Both rank channels with the configured importance (``importance=dict(type='L1')`` by default,
hence the names) and accept ``protective=True`` as well.
"""
from __future__ import annotations

from functools import partial

import torch

from mmrecprune.methods.structured import StructuredPruner
from mmrecprune.registry import PRUNERS
from mmrecprune.sparsity import bisect, global_channel_masks, round_half_up, round_up_to


@PRUNERS.register_module()
class L1UniformPruner(StructuredPruner):
    """L1-norm filter pruning with one ratio for every group (Li et al. 2017).

    Step k prunes, in every group, the ratio rho_k of its *dense* width with the smallest filter
    L1 norms, rho_k the smallest ratio meeting the step's target. If the final target needs a
    ratio that would leave a group with fewer than ``min_keep`` channels, construction fails
    (uniform ratios cannot reach it; use ``psap`` or ``l1_global``).
    """
    method = 'l1_uniform'

    def uniform_widths(self, rho):
        dense = self.schedule.dense_widths
        return round_up_to(dense - round_half_up(torch.tensor(rho, dtype=torch.float64) * dense),
                            self.round_to, dense)

    def check_reachable(self) -> None:
        goal = self.target_cost(self.num_steps)
        cost = partial(self.cost_model.cost, metric=self.metric)
        if cost(self.uniform_widths(1.0)) > goal:
            super().check_reachable()  # the generic message (not even emptying everything)
        rho, widths = bisect(self.uniform_widths, cost, goal, 0.0, 1.0)
        low = (widths < self.min_keep).nonzero().flatten()
        if low.numel():
            gi = int(low[0])
            raise ValueError(
                f'l1_uniform: reaching {self.metric} -{self.fraction:.0%} needs a uniform ratio '
                f'of about {rho:.3f} per group, which would keep {int(widths[gi])} of '
                f'{self.groups[gi].num_channels} channels of group {self.groups[gi].name!r} '
                f'(min_keep={self.min_keep}): the ratio would empty the layer; lower the target, '
                "or use 'psap' / 'l1_global', whose per-group ratios differ")
        super().check_reachable()

    def select(self, current, exempt, target, restored=None):
        n = self.widths(current)
        floor = torch.maximum(self.widths(exempt), torch.full_like(n, self.min_keep)).minimum(n)

        def widths_at(rho):
            return self.uniform_widths(rho).clamp(min=floor).minimum(n)

        rho, k = self.schedule.fit_widths(widths_at, target, 0.0, 1.0)
        masks = self.drop_lowest(current, exempt, self.scores(restored), n - k)
        return masks, dict(ratio=rho)


@PRUNERS.register_module()
class L1GlobalPruner(StructuredPruner):
    """L1-norm filter pruning ranked across all groups.

    Scores are each filter's L1 norm divided by the mean L1 norm of its group's kept filters
    (raw norms grow with fan-in, so unnormalised ranking would empty thin layers first), and
    :func:`~mmrecprune.sparsity.global_channel_masks` drops the lowest until the step's target
    is met; already pruned channels stay pruned.
    """
    method = 'l1_global'

    def select(self, current, exempt, target, restored=None):
        raw = self.scores(restored)
        scores = {}
        for g in self.groups:
            keep = current[g.name]
            mean = raw[g.name][keep].mean() if keep.any() else raw[g.name].new_ones(())
            s = raw[g.name] / mean.clamp_min(1e-12)
            s = s.masked_fill(~keep, float('-inf')).masked_fill(exempt[g.name], float('inf'))
            scores[g.name] = s
        total = sum(g.num_channels for g in self.groups)
        pruned_now = total - int(self.widths(current).sum())

        def masks_at(rho):
            masks = global_channel_masks(scores, rho, self.round_to, self.min_keep)
            return {n: (m & current[n]) | exempt[n] for n, m in masks.items()}

        lo, hi = pruned_now / total, (total - len(self.groups)) / total
        rho, masks = bisect(masks_at, lambda m: self.cost(m), target, lo, max(lo, hi))
        return masks, dict(ratio=rho)
