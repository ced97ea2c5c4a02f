# Fashion-MNIST classification, upsampled to 56x56 (the embedded pretraining task).
dataset_type = 'FashionMNIST'
data_root = None  # default: $FASHION_MNIST_ROOT or /usr/share/datasets/fashion-mnist
img_scale = 56
data_preprocessor = dict(
    type='ImgDataPreprocessor', mean=[72.94, 72.94, 72.94], std=[90.02, 90.02, 90.02])
train_pipeline = [
    dict(type='mmcv.Resize', scale=(img_scale, img_scale)),
    dict(type='mmcv.RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackClsInputs'),
]
test_pipeline = [
    dict(type='mmcv.Resize', scale=(img_scale, img_scale)),
    dict(type='PackClsInputs'),
]
train_dataloader = dict(
    batch_size=128,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=256,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='test', pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
# --auto-scale-lr: the lr of these configs is for one process of 128 images
auto_scale_lr = dict(base_batch_size=128)
