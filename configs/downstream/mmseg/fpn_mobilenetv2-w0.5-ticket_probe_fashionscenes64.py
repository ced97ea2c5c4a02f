# Benchmark probe (64x64 scenes) with a MobileNetV2-w0.5 ticket (e.g. on-the-fly pruning's):
# stages at strides 4 / 8 / 16 / 32 (out_indices 1, 2, 4, 6: 16, 16, 48, 160 channels).
#   --cfg-options model.backbone.ticket=work_dirs/.../tickets/onthefly_p70.pth
_base_ = './fpn_r18-w16_probe_fashionscenes64.py'
ticket = 'work_dirs/onthefly_mobilenetv2-w0.5_1xb128-6e_fashionmnist/tickets/onthefly_p70.pth'
model = dict(
    backbone=dict(_delete_=True, type='mmrecprune.PrunedBackbone', ticket=ticket,
                  out_indices=(1, 2, 4, 6), norm_eval=False),
    neck=dict(in_channels=[16, 16, 48, 160]))
