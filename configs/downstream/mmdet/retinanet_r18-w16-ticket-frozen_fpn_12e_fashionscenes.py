# Frozen-backbone detection probe: the ticket's backbone is frozen entirely (every stage, BN in
# eval mode), only FPN and the RetinaNet head train, so the score reflects the ticket's features
# rather than what fine-tuning the backbone can recover.
_base_ = './retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py'
model = dict(backbone=dict(frozen_stages=4, norm_eval=True))
