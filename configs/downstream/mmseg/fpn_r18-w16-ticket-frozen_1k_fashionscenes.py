# Frozen-backbone segmentation probe: the ticket's backbone is frozen entirely (every stage, BN
# in eval mode), only the FPN neck and decode head train.
_base_ = './fpn_r18-w16-ticket_1k_fashionscenes.py'
model = dict(backbone=dict(frozen_stages=4, norm_eval=True))
