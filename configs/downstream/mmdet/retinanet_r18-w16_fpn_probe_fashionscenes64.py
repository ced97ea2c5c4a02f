# Benchmark probe: RetinaNet on 64x64 scenes (1-3 items of 20-40 px), a quarter of the default's
# pixels, so the pruning benchmarks can fine-tune one detector per ticket and seed. Data:
#   python tools/dataset_converters/make_fashion_scenes.py --out-dir data/fashion_scenes_64 \
#       --canvas-size 64 --min-scale 20 --max-scale 40 --max-items 3
_base_ = './retinanet_r18-w16_fpn_12e_fashionscenes.py'
data_root = 'data/fashion_scenes_64/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_test.json')
test_evaluator = val_evaluator
# anchors of 16-25 px at stride 8 (default 24-38) to match the 20-40 px items
model = dict(bbox_head=dict(anchor_generator=dict(octave_base_scale=2)))
# Warm-up over 500 iterations (4 of the 12 epochs), not the default's 200, and, inherited from
# the base schedule, the gradient norm clipped at 2 (was 35). With 200 iterations and the clip
# at 35, 4 of 48 benchmark runs collapsed once the lr reached 0.02 (2-10 mAP); the 500-iteration
# warm-up only moved the failures to other runs (3 of 48), see "Detection probe failures" in
# configs/psap/README.md. The cause is a gradient spike at the 0.02 peak, which the clip bounds
# (measured on the 128x128 main job: "Detection recipe" in configs/recprune/README.md). With
# the clip at 2, 0 of 48 runs collapsed (8 backbones: dense, RecPrune / IMP / RotNet 79 %, S4L
# 95.6 %, PSAP -50 % FLOPs, on-the-fly 50 %, magnitude 70 %; x 6 seeds; all 14.3-16.8 mAP;
# dense 16.02 +- 0.28 over 6 seeds against 16.37 +- 0.32 over 3 with the clip at 35):
#   python tools/benchmarks/bench_probe_stability.py --backbone NAME=FILE ... --seeds 0 1 2 3 4 5
# The benchmark tables of configs/psap and configs/recprune were measured with the clip at 35
# and have not been re-run with it; reproduce them with
#   --cfg-options optim_wrapper.clip_grad.max_norm=35
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
