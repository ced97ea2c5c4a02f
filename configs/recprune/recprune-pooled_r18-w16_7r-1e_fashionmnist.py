# RecPrune stage 2 with the cheaper target (rec_downsample=2): the same loop, L_cls + 10 * L_rec
# with L_rec on the input average-pooled 2x; its decoder comes from the pooled decoder stage.
# README.md, "A cheaper target": step cost and tickets against the full-resolution target.
_base_ = ['./recprune_r18-w16_7r-1e_fashionmnist.py']
model = dict(rec_downsample=2)
load_from = 'work_dirs/recprune-pooled_r18-w16_decoder-stage_fashionmnist/epoch_3.pth'
