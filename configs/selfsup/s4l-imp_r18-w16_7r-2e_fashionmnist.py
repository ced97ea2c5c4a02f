# S4L-RotNet: the RotNet pruning loop plus cross-entropy on a labelled 10 % of the images (a fixed
# share of the dataset indices for model.seed; the other labels are never read).
_base_ = ['./rotnet-imp_r18-w16_7r-2e_fashionmnist.py']
model = dict(labelled_fraction=0.1, num_classes=10, seed=0)
custom_hooks = [
    dict(type='LotteryTicketHook', rounds=7, epochs_per_round=2, reset_lr=True,
         example_input_shape=(1, 3, 56, 56),
         pruner=dict(type='IterativeMagnitudePruner', prune_ratio=0.2, rewind_to='iteration',
                     rewind_iter=79, include=('backbone.*', ), exclude=(), method='s4l-imp'))
]
