# The paper's pruning-stage optimiser: SGD, constant lr 3e-4, momentum 0.9, masked updates.
optim_wrapper = dict(
    type='mmrecprune.PruningOptimWrapper',
    optimizer=dict(type='SGD', lr=3e-4, momentum=0.9, weight_decay=0.0))
param_scheduler = []
val_cfg = dict()
test_cfg = dict()
