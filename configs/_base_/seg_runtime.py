# Runtime for the MMSegmentation downstream configs.
default_scope = 'mmseg'
custom_imports = dict(imports=['mmrecprune'], allow_failed_imports=False)
# NCCL on GPUs (MMEngine's default); without a GPU, tools/train.py and tools/test.py start a
# gloo process group themselves (mmrecprune.distributed.setup_cpu_distributed)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
tta_model = dict(type='SegTTAModel')
