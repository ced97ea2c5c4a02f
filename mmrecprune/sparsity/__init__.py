"""The pruning engine: plain PyTorch, no MMEngine imports."""
from .masks import (DEFAULT_EXCLUDE, apply_masks, check_masks, init_masks, name_matches,
                    pack_mask, prunable_parameters, rewind, unpack_mask, zero_pruned_)
from .report import mask_overlap, plot_kept_channels, plot_layer_sparsity, sparsity_report
from .thresholds import (global_magnitude_masks, global_magnitude_threshold,
                         layerwise_magnitude_masks)
from .frozen_masks import freeze_masks
from .channel_groups import (CHANNEL_PARAMS, ChannelGroup, find_channel_groups,
                             out_channels_after_pruning)
from .channel_masks import (apply_channel_masks, global_channel_masks, keep_mask_from_ratio,
                            layer_channel_masks)
from .flops import count_flops_params, inference_forward
from .importance import (IMPORTANCES, BNScaleImportance, L1Importance, L2Importance,
                         TaylorImportance, build_importance, group_importances)
from .slimming import apply_channel_structure, channel_sizes, slim_model
from .channel_cost import ChannelCostModel
