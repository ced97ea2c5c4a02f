# PSAP with slimming during training: protective restoration can bring any pruned channel back
# until the last step (start of epoch 2), so the channels leave the model being trained right
# after it; epochs 2-3 train the slim model (50 % of the backbone FLOPs). Same ticket as
# psap_r18-w16_1xb128-4e_fashionmnist.py; checkpoints from epoch 2 on hold the slim model.
_base_ = './psap_r18-w16_1xb128-4e_fashionmnist.py'
custom_hooks = [
    dict(type='StructuredPruningHook', interval=1, begin=0, example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='PSAPPruner', target=dict(flops=0.5), num_steps=3,
                     slim_during_training=True))
]
