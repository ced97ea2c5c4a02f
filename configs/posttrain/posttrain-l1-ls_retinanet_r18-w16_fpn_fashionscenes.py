# Post-training structured pruning of a trained RetinaNet (the embedded scenes): the backbone's
# block-internal channels, -50 % backbone FLOPs, least-squares re-fit, no training. The neck
# keeps its in_channels (block outputs are not cut).
#   python tools/prune_post_training.py \
#       configs/posttrain/posttrain-l1-ls_retinanet_r18-w16_fpn_fashionscenes.py \
#       work_dirs/retinanet_r18-w16_fpn_12e_fashionscenes/epoch_12.pth --calibration-images 256
_base_ = '../downstream/mmdet/retinanet_r18-w16_fpn_12e_fashionscenes.py'
post_training = dict(
    type='PostTrainingPruner', target=dict(flops=0.5), importance=dict(type='L1'),
    ranking='global', reconstruction='least_squares+mean', bn_recalibration=False,
    ridge='auto', positions_per_image=64)
