# Baseline: L1-norm filter pruning ranked globally (each filter's L1 over its layer's mean), on
# PSAP's schedule, soft masks and fine-tuning (no protective restoration).
_base_ = '../psap/psap_r18-w16_1xb128-4e_fashionmnist.py'
custom_hooks = [
    dict(type='StructuredPruningHook', interval=1, begin=0, example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='L1GlobalPruner', target=dict(flops=0.5), num_steps=3))
]
