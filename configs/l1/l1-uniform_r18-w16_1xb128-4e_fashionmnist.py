# Baseline: L1-norm filter pruning with one ratio for every layer (Li et al. 2017), on PSAP's
# schedule, soft masks and fine-tuning (no adaptive ratios, no protective restoration).
_base_ = '../psap/psap_r18-w16_1xb128-4e_fashionmnist.py'
custom_hooks = [
    dict(type='StructuredPruningHook', interval=1, begin=0, example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='L1UniformPruner', target=dict(flops=0.5), num_steps=3))
]
