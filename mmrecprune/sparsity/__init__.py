"""The pruning engine: plain PyTorch, no MMEngine imports."""
from .masks import (DEFAULT_EXCLUDE, apply_masks, check_masks, init_masks, name_matches,
                    pack_mask, prunable_parameters, rewind, unpack_mask)
from .report import plot_layer_sparsity, sparsity_report
from .thresholds import (global_magnitude_masks, global_magnitude_threshold,
                         layerwise_magnitude_masks)
from .frozen_masks import freeze_masks
