"""The pruning engine: plain PyTorch, no MMEngine imports. One home per question:

* what is coupled: :mod:`.channel_groups`;
* what matters: :mod:`.importance` (criteria scoring weights or channels, in a table that
  ``mmrecprune.registry.CRITERIA`` extends), :mod:`.thresholds` (ranking the scores: global,
  per layer, within N:M groups);
* how to cut: :mod:`.masks` (weight masks: :mod:`.mask_enforcement` applies them,
  :mod:`.weight_masks` holds them around optimizer steps, :mod:`.mask_packing` stores them
  as bits) with :mod:`.nm_layout` (the N:M rule),
  :mod:`.channel_masks` and :mod:`.soft_channel_masks` (channel masks), :mod:`.slimming`
  (removing channels), :mod:`.frozen_masks` (downstream),
  :mod:`.recovery` (mean values in place of pruned entries), :mod:`.semi_structured` (2:4
  1x1 convs as sparse matrix products on GPUs), :mod:`.hyperspherical`
  (unit-norm filters and their folding) with :mod:`.gap_penalty` (on-the-fly pruning),
  :mod:`.reinit` (random weights that keep only a mask), :mod:`.least_squares` (re-fitting
  the layers that read cut channels) with :mod:`.bn_recalibration` (post-training pruning);
* when and how much: :mod:`.cost_schedule` with :mod:`.channel_cost` and :mod:`.flops`;
  :mod:`.gradient_monitor` averages gradient criteria and feeds protective
  restoration; :mod:`.report` plots and compares;
* whether a saved pruner state fits the live pruner: :mod:`.state_checks`.
"""
from .masks import (DEFAULT_EXCLUDE, WeightMasks, apply_masks, check_masks, fill_pruned_,
                    init_masks, name_matches, pack_mask, prunable_parameters, random_masks_like,
                    rewind, unpack_mask, zero_pruned_)
from .nm_layout import (MAX_NM_GROUP, nm_groups, nm_tails, nm_ungroup, nm_violations,
                        parse_nm_pattern)
from .report import mask_overlap, plot_kept_channels, plot_layer_sparsity, sparsity_report
from .thresholds import (MAGNITUDE_RANKINGS, global_magnitude_masks,
                         global_magnitude_threshold, layerwise_magnitude_masks,
                         nm_magnitude_masks, nm_protected)
from .frozen_masks import freeze_masks
from .channel_groups import (CHANNEL_PARAMS, CONSUMER_KINDS, FILTER_KINDS, PRODUCER_KINDS,
                             ChannelGroup, find_channel_groups)
from .channel_masks import (apply_channel_masks, channel_zero_targets, global_channel_masks,
                            zero_channel_targets_)
from .soft_channel_masks import ZEROED_KINDS, SoftChannelMasks
from .flops import NORM_TYPES, count_flops_params, example_input, inference_forward
from .importance import (CRITERION_TYPES, IMPORTANCES, BNScaleImportance, Criterion,
                         L1Importance, L2Importance, RandomImportance, TaylorImportance,
                         WeightCriterion, build_criterion, build_importance, check_criterion,
                         criterion_targets, group_importances, register_criterion)
from .slimming import (apply_channel_structure, channel_sizes, expand_channels,
                        slice_optimizer_state_, slim_model)
from .channel_cost import ChannelCostModel
from .cost_schedule import (COST_METRICS, CostSchedule, bisect, bracket, check_schedule_args,
                            parse_target, round_half_up, round_up_to)
from .gradient_monitor import ChannelGradientMonitor, GradientScores, unscaled_gradients
from .state_checks import PrunerStateError
from .hyperspherical import (HypersphericalConv2d, fold_conv, fold_hyperspherical,
                             hyperspherical_convs, make_hyperspherical, strip_conv_cfg,
                             unit_filters)
from .gap_penalty import gap_penalty, gap_statistics, scaled_magnitudes, target_thresholds
from .recovery import RECOVERY_MODES, apply_recovery, check_recovery, recovery_fill
from .reinit import reinitialise
from .bn_recalibration import batch_size_of, recalibrate_batchnorm
from .least_squares import (AUTO_RIDGES, RECONSTRUCTION_MODES, NormalEquations,
                            check_reconstruction, fold_output_shift, following_norms,
                            layer_output_error, layer_rows, reconstruct_consumers, select_ridge,
                            solve_layer)
from .activation_importance import ActivationImportance, consumer_input_energy
from .semi_structured import (SEMI_STRUCTURED_PATTERN, SemiStructuredConv2d, conv1x1_as_matmul,
                              enable_semi_structured, semi_structured_report,
                              semi_structured_skip_reason, semi_structured_unavailable)
