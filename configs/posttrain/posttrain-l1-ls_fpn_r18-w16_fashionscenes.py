# Post-training structured pruning of a trained Semantic FPN (the embedded scenes): the
# backbone's block-internal channels, -50 % backbone FLOPs, least-squares re-fit, no training.
#   python tools/prune_post_training.py \
#       configs/posttrain/posttrain-l1-ls_fpn_r18-w16_fashionscenes.py \
#       work_dirs/fpn_r18-w16_1k_fashionscenes/iter_1000.pth --calibration-images 256
_base_ = '../downstream/mmseg/fpn_r18-w16_1k_fashionscenes.py'
post_training = dict(
    type='PostTrainingPruner', target=dict(flops=0.5), importance=dict(type='L1'),
    ranking='global', reconstruction='least_squares+mean', bn_recalibration=False,
    ridge='auto', positions_per_image=64)
