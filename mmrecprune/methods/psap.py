"""Protective Self-Adaptive Pruning (PSAP): only what is new in PSAP lives here.

The schedule, soft masks, backups, gradient monitor, importance and slimming it runs on are the
engine's (``mmrecprune.sparsity``) and :class:`~mmrecprune.methods.structured.StructuredPruner`'s.

Our reading of "Protective Self-Adaptive Pruning" (Li, Zhao; only the abstract is public, so the
formulas below are ours). Notation: group g (a :class:`~mmrecprune.sparsity.ChannelGroup`) has
``N_g`` channels, ``n_g`` of them currently kept (mask ``M_g``).

* **Schedule.** ``num_steps`` = K steps; after step k the model's cost (FLOPs, params or channel
  count, see :class:`ChannelCostModel`) must be at most ``C_k = C_dense * (1 - T * k / K)`` where
  T is the target fraction to remove. Targets are absolute, so a step also pays back any cost that
  protective restoration added since the previous one.
* **Layer sparsity.** ``s_g = #{w in W_m[M_g] : |w| < eps * mean|W_m[M_g]|} / #W_m[M_g]``, summed
  over the group's filter layers m (conv / depthwise / linear producing the channel), counted on
  the *kept* filters only (``eps = 0.1``: about 6 % of a Gaussian layer).
* **Self-adaptive ratios.** ``a_g = phi + (1 - phi) * s_g / mean_g(s_g)`` (``phi = 0.3``, the
  floor), and the step prunes ``p_g = round(min(alpha * a_g, 1) * n_g)`` of the kept channels
  (capped so ``min_keep`` channels and every protected channel stay), kept width rounded up to
  ``round_to``. ``alpha`` is the smallest value (bisection; cost is monotone in alpha) with
  cost <= ``C_k``. With ``round_to > 1`` the slack that rounding leaves below ``C_k`` is given
  back (groups take their width just below ``alpha``, cheapest first, while cost <= ``C_k``).
  Within a group the channels with the smallest filter L1 norm go. ``adaptive=False`` uses
  ``a_g = 1`` (uniform ratios relative to the kept width).
* **Soft pruning.** Pruned filters (conv / BN / linear rows, see
  :func:`~mmrecprune.sparsity.apply_channel_masks`) are zeroed, not removed, and re-zeroed after
  every optimizer step; their values (and BN statistics) at pruning time are kept as a backup.
* **Protective restoration.** A zeroed channel followed by BN and ReLU gets exactly zero weight
  gradients (``d ReLU(0) = 0``), so the signal is the gradient of the loss w.r.t. the channel's
  *activation*, taken where its consumer layers read it (their input weights are never zeroed):
  ``G_c = || dL / da_c ||_2`` per optimizer step, tracked as an EMA
  ``E_c <- beta * E_c + (1 - beta) * G_c`` (``beta = 0.98``, about 50 optimizer steps; first
  value taken as is) by :class:`ChannelGradientMonitor`. Before every step after the first, a
  pruned channel with ``E_c > kappa * median{E_j : j kept in g}`` (``kappa = protect_factor =
  1.5``) is restored from its backup and exempt from that step. The last step drops the
  exemptions only if the target cannot be met otherwise; after it nothing is restored, so the
  final mask meets the target.
* **Slimming during training** (``slim_during_training=True``). Any pruned channel can be
  restored before any later step (its activation gradient is watched until then), so with
  protection on no channel can leave the model before the last step; right after the last step
  every pruned channel leaves for good. With ``protective=False`` channels leave at every step.
"""
from __future__ import annotations

from typing import Mapping

import torch

from mmrecprune.methods.structured import StructuredPruner
from mmrecprune.registry import PRUNERS
from mmrecprune.sparsity import CHANNEL_PARAMS, FILTER_KINDS, round_half_up, round_up_to


@PRUNERS.register_module()
class PSAPPruner(StructuredPruner):
    """Protective Self-Adaptive Pruning (our reading; formulas in the module docstring).

    Args:
        adaptive (bool): Per-group ratios from the layer sparsity ``s_g``; False = uniform ratios
            of the kept width (ablation). Defaults to True.
        protective (bool): Protective restoration (ablation switch). Defaults to True.
        sparsity_eps (float): eps of ``s_g``: a weight is "small" below eps x the mean magnitude
            of its layer's kept filters. Defaults to 0.1.
        ratio_floor (float): phi in ``a_g = phi + (1 - phi) s_g / mean(s)``, in [0, 1]: the share
            of every group's ratio that does not depend on its sparsity. Defaults to 0.3.
        **kwargs: See :class:`~mmrecprune.methods.structured.StructuredPruner` (target,
            num_steps, scope, prune_residual, round_to, min_keep, importance, protect_factor,
            grad_momentum).
    """
    method = 'psap'

    def __init__(self, adaptive: bool = True, protective: bool = True,
                 sparsity_eps: float = 0.1, ratio_floor: float = 0.3, **kwargs) -> None:
        if sparsity_eps <= 0:
            raise ValueError(f'sparsity_eps must be > 0, got {sparsity_eps}')
        if not 0.0 <= ratio_floor <= 1.0:
            raise ValueError(f'ratio_floor must be in [0, 1], got {ratio_floor}')
        self.adaptive = adaptive
        self.sparsity_eps = sparsity_eps
        self.ratio_floor = ratio_floor
        super().__init__(protective=protective, **kwargs)

    @torch.no_grad()
    def layer_sparsity(self, masks: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``s_g`` of every group (float tensor, group order), on the kept filters only."""
        masks = self.masks if masks is None else masks
        out = []
        for g in self.groups:
            idx = self.soft.physical_index(g, masks[g.name])
            small = total = 0
            for name, kind in g.members:
                if kind not in FILTER_KINDS or idx.numel() == 0:
                    continue
                attr, dim = CHANNEL_PARAMS[kind][0]
                w = getattr(self.modules[name], attr).detach()
                w = w.index_select(dim, idx.to(w.device)).abs()
                small += int((w < self.sparsity_eps * w.mean()).sum())
                total += w.numel()
            out.append(small / total if total else 0.0)
        return torch.tensor(out, dtype=torch.float64)

    def layer_weights(self, masks: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``a_g``: how strongly each group is pruned relative to the others (mean about 1)."""
        if not self.adaptive:
            return torch.ones(len(self.groups), dtype=torch.float64)
        s = self.layer_sparsity(masks)
        if s.mean() <= 0:
            return torch.ones_like(s)
        return self.ratio_floor + (1.0 - self.ratio_floor) * s / s.mean()

    def select(self, current, exempt, target, restored=None):
        n = self.widths(current)
        avail = self.widths({k: current[k] & ~exempt[k] for k in current})
        cap = torch.minimum(avail, (n - self.min_keep).clamp(min=0))
        # sparsity of the channels kept through the last step (restored ones are still zero)
        survivors = {k: current[k] & ~exempt[k] for k in current}
        a = self.layer_weights(survivors)

        def widths_at(alpha):
            p = round_half_up((alpha * a).clamp(max=1.0) * n).clamp(max=cap)
            return round_up_to(n - p, self.round_to, n)

        positive = a[a > 0]
        hi = float(1.0 / positive.min()) if positive.numel() else 1.0
        alpha, k = self.schedule.fit_widths(widths_at, target, 0.0, hi)
        masks = self.drop_lowest(current, exempt, self.scores(restored), n - k)
        info = dict(alpha=alpha, ratio_min=float(((n - k) / n.clamp(min=1)).min()),
                    ratio_max=float(((n - k) / n.clamp(min=1)).max()))
        if self.adaptive:
            info['mean_layer_sparsity'] = float(self.layer_sparsity(survivors).mean())
        return masks, info

    def ticket_content(self, prefix='backbone'):
        content = super().ticket_content(prefix)
        content['meta'].update(adaptive=self.adaptive, sparsity_eps=self.sparsity_eps,
                               ratio_floor=self.ratio_floor)
        return content
