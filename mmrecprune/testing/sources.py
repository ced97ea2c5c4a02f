"""Small real files to test and fuzz with: a shrunk training config and a ticket exported
the way every pruning run exports one."""


UNSTRUCTURED_60 = dict(type='IterativeMagnitudePruner', prune_ratio=0.6, rewind_to='none',
                      include=('*', ), method='test')
STRUCTURED_50 = dict(type='PSAPPruner', target=dict(flops=0.5), num_steps=1, scope='')
MBV2_W05 = dict(type='mmdet.MobileNetV2', widen_factor=0.5, out_indices=(7, ))
#: on-the-fly style: 70 % of every conv but the first, mean values in the pruned entries
ONE_SHOT_70_FILLED = dict(type='OneShotMagnitudePruner', sparsity=0.7,
                          recovery='filter_abs_signed', include=('*', ), exclude=('conv1.*', ))


def shrink_classifier_cfg(cfg, work_dir, train_size=64, val_size=32, batch_size=16,
                          max_epochs=2, base_channels=8):
    """A classification config of configs/ (a loaded ``Config``), shrunk in place to a few
    iterations on a Fashion-MNIST subset, for tests and the loader fuzzer's sources."""
    cfg.work_dir = str(work_dir)
    cfg.model.backbone.base_channels = base_channels
    cfg.model.in_channels = base_channels * 8
    for loader, size in ((cfg.train_dataloader, train_size), (cfg.val_dataloader, val_size)):
        loader.batch_size = batch_size
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.indices = size
        # no random flip: resumed runs must replay the same batches bit for bit
        loader.dataset.pipeline = [t for t in loader.dataset.pipeline
                                   if t['type'] != 'mmcv.RandomFlip']
        for t in loader.dataset.pipeline:
            if t['type'] == 'mmcv.Resize':
                t['scale'] = (32, 32)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg.max_epochs = max_epochs
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.max_keep_ckpts = -1
    cfg.param_scheduler = []
    cfg.log_level = 'WARNING'
    cfg.visualizer.vis_backends = []
    return cfg


def export_test_ticket(path, backbone_cfg, pruner_cfg, input_shape=(1, 3, 64, 64), seed=0):
    """Build ``backbone_cfg`` (random init, ``seed``), prune it with one step of the pruner
    ``pruner_cfg`` and write its ticket with :func:`mmrecprune.tickets.export_ticket`, the path
    every pruning run takes; return ``path``."""
    import torch

    from mmrecprune.registry import MODELS, PRUNERS
    from mmrecprune.tickets import export_ticket
    torch.manual_seed(seed)
    net = MODELS.build(backbone_cfg)
    pruner = PRUNERS.build(pruner_cfg)
    pruner.attach(net, torch.randn(input_shape))
    pruner.step()
    export_ticket(str(path), pruner, backbone_cfg, input_shape, prefix='', plot=False)
    return str(path)
