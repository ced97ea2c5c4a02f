# Post-training structured pruning of the dense Fashion-MNIST classifier: -50 % backbone FLOPs,
# channels by L1 (ranked across groups), least-squares re-fit of the next layers with an
# intercept, no training. Read by tools/prune_post_training.py (the command line overrides):
#   python tools/prune_post_training.py configs/posttrain/posttrain-l1-ls_r18-w16_fashionmnist.py \
#       work_dirs/resnet18-w16_1xb128-6e_fashionmnist/epoch_6.pth --calibration-images 512
_base_ = '../pretrain/resnet18-w16_1xb128-6e_fashionmnist.py'
post_training = dict(
    type='PostTrainingPruner', target=dict(flops=0.5), importance=dict(type='L1'),
    ranking='global', reconstruction='least_squares+mean', bn_recalibration=False,
    ridge='auto', positions_per_image=64)
