# Baseline on ImageNet ResNet-50: uniform L1-norm filter pruning on PSAP's schedule.
_base_ = '../psap/psap_r50_8xb32-30e_imagenet.py'
custom_hooks = [
    dict(type='StructuredPruningHook', interval=2, begin=0, example_input_shape=(1, 3, 224, 224),
         pruner=dict(type='L1UniformPruner', target=dict(flops=0.5), num_steps=5, round_to=8))
]
