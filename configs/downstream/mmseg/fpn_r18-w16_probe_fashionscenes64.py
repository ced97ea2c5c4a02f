# Benchmark probe: Semantic FPN on 64x64 scenes (1-3 items of 20-40 px), a quarter of the
# default's pixels, so the pruning benchmarks can fine-tune one segmenter per ticket and seed.
# Data: see configs/downstream/mmdet/retinanet_r18-w16_fpn_probe_fashionscenes64.py.
_base_ = './fpn_r18-w16_1k_fashionscenes.py'
data_root = 'data/fashion_scenes_64/'
model = dict(data_preprocessor=dict(size=(64, 64)))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
