# RecPrune stage 1 with the cheaper target: the decoder reconstructs the input average-pooled 2x
# (28x28, the size Fashion-MNIST's images have before the pipeline upsamples them to 56x56).
_base_ = ['./recprune_r18-w16_decoder-stage_fashionmnist.py']
model = dict(rec_downsample=2)
