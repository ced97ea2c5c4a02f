"""In-task pruning: the configs of configs/intask/ (mmdet's shipped RetinaNet and Mask R-CNN,
mmseg's shipped DeepLabV3 and Semantic FPN, with only the starting weights, the optimizer
wrapper and custom_hooks changed) prune the backbone while the detector / segmentor trains with
its own loss, and write a slim model that ``init_detector`` / ``init_model`` / a test runner /
the ONNX exporter load from the written config and checkpoint alone.

The runs are real MMEngine runners on synthetic COCO / ADE20K layouts (64x64 inputs, ResNet-50
at base width 16, a few iterations); a run in 2 processes (gloo) and a resume between two
pruning steps are included.
"""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmrecprune.fileio import read_plain
from mmrecprune.testing.synthetic_layouts import write_ade20k, write_coco
from mmrecprune.tickets import load_ticket
from tests.conftest import dist_train, repo_path

pytestmark = pytest.mark.usefixtures('single_thread')

SIZE = 64
DENSE_WIDTHS = [64, 128, 256, 512]  # ResNet-50 stage outputs at base_channels=16


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return write_coco(str(tmp_path_factory.mktemp('data') / 'coco'), num_train=2, num_val=1)


@pytest.fixture(scope='module')
def ade20k(tmp_path_factory):
    return write_ade20k(str(tmp_path_factory.mktemp('data') / 'ade'), num_train=2, num_val=1)


def _loaders(cfg, root, train_batch):
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[name]
        loader.update(batch_size=train_batch if name == 'train_dataloader' else 1,
                      num_workers=0, persistent_workers=False)
        loader.dataset.data_root = root
        # deterministic batches (resumed and full runs see the same): no flips, no distortion
        pipeline = [s for s in loader.dataset.pipeline if s.type != 'PhotoMetricDistortion']
        for step in pipeline:
            if step.type in ('Resize', 'RandomResize'):
                step.scale = (SIZE, SIZE)
            if step.type == 'RandomCrop':
                step.crop_size = (SIZE, SIZE)
            if step.type == 'RandomFlip':
                step.prob = 0.0
        loader.dataset.pipeline = pipeline


def tiny_intask_cfg(config, root, work_dir, epochs=None, iters=None, **pruner):
    """configs/intask/CONFIG at 64x64 on the synthetic data at ``root``: ResNet-50 at base
    width 16 (and narrow necks / heads), random init, the hook's steps every epoch (or
    iteration); ``pruner`` overrides the pruner's arguments."""
    cfg = Config.fromfile(repo_path('configs', 'intask', config))
    cfg.work_dir = str(work_dir)
    cfg.load_from = None
    cfg.randomness = dict(seed=0)
    model = cfg.model
    model.backbone.update(base_channels=16, stem_channels=16)
    if cfg.default_scope == 'mmdet':
        model.backbone.pop('stem_channels')  # mmdet's follows base_channels
        _loaders(cfg, root + '/', train_batch=2)
        for evaluator in ('val_evaluator', 'test_evaluator'):
            cfg[evaluator].ann_file = osp.join(root, 'annotations', 'instances_val2017.json')
        model.neck.update(in_channels=DENSE_WIDTHS, out_channels=32)
        if 'bbox_head' in model:
            model.bbox_head.update(in_channels=32, feat_channels=32)
        else:
            model.rpn_head.update(in_channels=32, feat_channels=32)
            roi = model.roi_head
            roi.bbox_roi_extractor.out_channels = roi.mask_roi_extractor.out_channels = 32
            roi.bbox_head.update(in_channels=32, fc_out_channels=64)
            roi.mask_head.update(in_channels=32, conv_out_channels=32)
        cfg.train_cfg.update(max_epochs=epochs, val_interval=100)
        cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0)]
    else:
        _loaders(cfg, root, train_batch=2)
        model.data_preprocessor.size = (SIZE, SIZE)
        if model.get('neck'):
            model.neck.update(in_channels=DENSE_WIDTHS, out_channels=16)
            model.decode_head.update(in_channels=[16] * 4, channels=16)
        else:
            model.decode_head.update(in_channels=DENSE_WIDTHS[-1], channels=16)
            model.auxiliary_head.update(in_channels=DENSE_WIDTHS[-2], channels=16)
        cfg.train_cfg.update(max_iters=iters, val_interval=100)
        cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.default_hooks.logger.interval = 1
    hook = cfg.custom_hooks[0]
    hook.example_input_shape = (1, 3, SIZE, SIZE)
    if 'interval' in hook:
        hook.interval = 1
    hook.pruner.update(pruner)
    return cfg


def train(cfg):
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def check_written_model(work_dir, stem):
    """The slim model's files: the ticket checks against its schema, the checkpoint is plain
    data (weights-only torch.load and the project's reader) carrying the ticket header and the
    class names; returns ``(ticket, config, checkpoint)``."""
    tickets = osp.join(str(work_dir), 'tickets')
    ticket = load_ticket(osp.join(tickets, f'{stem}.pth'))
    config, checkpoint = (osp.join(tickets, f'{stem}_model.{ext}') for ext in ('py', 'pth'))
    plain = torch.load(checkpoint, weights_only=True)
    assert read_plain(checkpoint).keys() == plain.keys() == {'meta', 'state_dict'}
    assert plain['state_dict']['backbone.ticket'].dtype == torch.uint8
    assert plain['meta']['dataset_meta']['classes']
    assert plain['meta']['ticket']['method'] == ticket.meta['method']
    written = Config.fromfile(config)
    assert written.model.backbone.type == 'mmrecprune.PrunedBackbone'
    assert written.load_from is None
    assert not [h for h in written.custom_hooks if 'Pruning' in h.type or 'Ticket' in h.type]
    return ticket, config, checkpoint


def _kept_widths(model):
    return {n: m.out_channels for n, m in model.backbone.named_modules()
            if isinstance(m, torch.nn.Conv2d)}


# -- structured, RetinaNet: Taylor with the detection loss, residual channels pruned ----------
@pytest.fixture(scope='module')
def taylor_run(coco, tmp_path_factory):
    """Taylor steps at the start of epochs 1 and 2 of 3 (-50 % FLOPs), block outputs pruned
    too, so the neck's in_channels change."""
    work = tmp_path_factory.mktemp('taylor')
    cfg = tiny_intask_cfg('taylor_retinanet_r50_fpn_1x_coco.py', coco, work / 'full', epochs=3,
                          num_steps=2, prune_residual=True)
    runner = train(cfg)
    return dict(work=work, cfg=cfg, runner=runner)


def test_structured_retinanet_writes_a_slim_detector_that_init_detector_loads(taylor_run):
    from mmdet.apis import inference_detector, init_detector
    ticket, config, checkpoint = check_written_model(taylor_run['work'] / 'full', 'slim')
    assert ticket.kind == 'structured' and ticket.meta['method'] == 'l1_global'
    assert ticket.meta['importance'] == dict(type='Taylor')
    assert ticket.meta['flops_ratio'] <= 0.5 + 1e-6
    widths = ticket.meta['out_channels']
    assert widths != DENSE_WIDTHS  # residual channels pruned
    assert Config.fromfile(config).model.neck.in_channels == widths

    model = init_detector(config, checkpoint, device='cpu')  # the config alone: no overrides
    assert model.dataset_meta['classes'][0] == 'person'
    assert [getattr(model.backbone, n)[-1].conv3.out_channels
            for n in model.backbone.res_layers] == widths
    # the slim detector computes what the pruned (masked, dense-shaped) one computes
    pruned = taylor_run['runner'].model
    x = torch.rand(1, 3, SIZE, SIZE)
    pruned.eval()
    with torch.no_grad():
        expected, got = pruned(x, mode='tensor'), model(x, mode='tensor')
    for a, b in zip(sum(expected, []), sum(got, [])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    result = inference_detector(model, np.zeros((SIZE, SIZE, 3), np.uint8))
    assert result.pred_instances.bboxes.shape[1] == 4
    dense = sum(p.numel() for p in pruned.backbone.parameters())
    assert sum(p.numel() for p in model.backbone.parameters()) < 0.7 * dense


def test_slim_detector_tests_and_exports_to_onnx_from_its_config(taylor_run, tmp_path):
    """What tools/test.py does (a runner built from the written config, the checkpoint as
    load_from) and the ONNX export of the whole detector."""
    pytest.importorskip('onnxruntime')
    pytest.importorskip('onnxscript')
    from mmrecprune.analysis import export_onnx, max_abs_difference
    _, config, checkpoint = check_written_model(taylor_run['work'] / 'full', 'slim')
    cfg = Config.fromfile(config)
    cfg.work_dir, cfg.load_from = str(tmp_path / 'test'), checkpoint
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert 'coco/bbox_mAP' in metrics or metrics == {}  # empty detections on noise are fine
    model = runner.model
    wrapped = export_onnx(model, (1, 3, SIZE, SIZE), str(tmp_path / 'slim.onnx'))
    worst, _ = max_abs_difference(wrapped, str(tmp_path / 'slim.onnx'), (1, 3, SIZE, SIZE))
    assert worst < 1e-3


def test_resume_between_two_pruning_steps_continues_exactly(taylor_run):
    """Resumed from epoch_2.pth (after the first Taylor step, before the second), the run takes
    only the second step and ends with the full run's ticket."""
    cfg = copy.deepcopy(taylor_run['cfg'])
    cfg.work_dir = str(taylor_run['work'] / 'resumed')
    cfg.resume = True
    cfg.load_from = str(taylor_run['work'] / 'full' / 'epoch_2.pth')
    runner = train(cfg)
    assert runner.epoch == 3
    full = load_ticket(str(taylor_run['work'] / 'full' / 'tickets' / 'slim.pth'))
    resumed, _, _ = check_written_model(taylor_run['work'] / 'resumed', 'slim')
    assert resumed.meta['step'] == full.meta['step'] == 2
    assert resumed.channel_structure == full.channel_structure
    assert resumed.meta['kept_channels'] == full.meta['kept_channels']
    for name, value in full.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[name], value, rtol=1e-5, atol=1e-6,
                                   msg=name)


# -- structured, Mask R-CNN: PSAP; the two-stage forward needs data samples -------------------
def test_psap_mask_rcnn_prunes_its_backbone_and_loads_from_its_config(coco, tmp_path):
    """PSAP slimming the detector during training (the last step's channels leave the model
    being trained); the written detector is the trained one."""
    from mmdet.apis import inference_detector, init_detector
    cfg = tiny_intask_cfg('psap_mask-rcnn_r50_fpn_1x_coco.py', coco, tmp_path, epochs=3,
                          num_steps=2, slim_during_training=True)
    dense = _kept_widths(Runner.from_cfg(copy.deepcopy(cfg)).model)
    runner = train(cfg)
    ticket, config, checkpoint = check_written_model(tmp_path, 'slim')
    assert ticket.meta['method'] == 'psap' and ticket.meta['step'] == 2
    assert ticket.meta['flops_ratio'] <= 0.5 + 1e-6
    trained = _kept_widths(runner.model)
    assert sum(trained.values()) < sum(dense.values())  # slimmed while it trained
    model = init_detector(config, checkpoint, device='cpu')
    assert _kept_widths(model) == trained
    result = inference_detector(model, np.zeros((SIZE, SIZE, 3), np.uint8))
    assert 'masks' in result.pred_instances


# -- unstructured: iterative / one-shot magnitude with the detection loss, then fine-tuning --
@pytest.mark.parametrize('config,rounds,sparsity', [
    ('imp_retinanet_r50_fpn_1x_coco.py', 2, 1 - 0.8 ** 2),
    ('oneshot_retinanet_r50_fpn_1x_coco.py', 1, 0.5)], ids=['iterative', 'one-shot'])
def test_magnitude_pruning_retinanet_writes_a_masked_detector(coco, tmp_path, config, rounds,
                                                              sparsity):
    """Iterative (2 rounds of 20 %, no rewinding) or one-shot (50 %) magnitude pruning, then 1
    fine-tuning epoch with the mask fixed: the final ticket holds the fine-tuned weights, zero
    where pruned, and the detector loads with them."""
    from mmdet.apis import init_detector
    cfg = tiny_intask_cfg(config, coco, tmp_path, epochs=rounds + 1)
    cfg.custom_hooks[0].update(rounds=rounds, finetune_epochs=1)
    runner = train(cfg)
    ticket, config, checkpoint = check_written_model(tmp_path, 'final')
    assert ticket.kind == 'unstructured' and ticket.meta['step'] == rounds
    assert abs(ticket.meta['sparsity'] - sparsity) < 0.01
    last_round = load_ticket(str(tmp_path / 'tickets' / f'round_{rounds}.pth'))
    changed = [n for n in ticket.masks if not torch.equal(ticket.state_dict[n],
                                                          last_round.state_dict[n])]
    assert changed, 'the fine-tuning epoch did not train the kept weights'
    model = init_detector(config, checkpoint, device='cpu')
    own = model.backbone.state_dict()
    trained = runner.model.backbone.state_dict()
    for name, mask in ticket.masks.items():
        assert not own[name][~mask].any(), name
        torch.testing.assert_close(own[name], trained[name], rtol=0, atol=0)


# -- mmseg ------------------------------------------------------------------------------------
def _segmentation_batch(model):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE),
                                             pad_shape=(SIZE, SIZE)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, SIZE, SIZE)))
        samples.append(sample)
    inputs = [torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8) for _ in samples]
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)


@pytest.mark.parametrize('config,residual', [
    ('psap_deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py', True),
    ('l1-global_fpn_r50_4xb4-160k_ade20k-512x512.py', False)])
def test_segmentor_prunes_its_backbone_and_loads_from_its_config(ade20k, tmp_path, config,
                                                                 residual):
    """DeepLabV3 with its block outputs pruned: the decode head and the auxiliary head (which
    the tensor forward skips) read the slim widths, in the written config and the weights."""
    from mmseg.apis import inference_model, init_model
    cfg = tiny_intask_cfg(config, ade20k, tmp_path, iters=2, num_steps=2,
                          prune_residual=residual)
    train(cfg)
    ticket, written, checkpoint = check_written_model(tmp_path, 'slim')
    assert ticket.meta['flops_ratio'] <= 0.5 + 1e-6
    model = init_model(written, checkpoint, device='cpu')
    if residual:
        widths = ticket.meta['out_channels']
        assert widths != DENSE_WIDTHS
        heads = Config.fromfile(written).model
        assert heads.decode_head.in_channels == widths[3]
        assert heads.auxiliary_head.in_channels == widths[2]
        assert model.auxiliary_head.convs[0].conv.in_channels == widths[2]
        assert model.backbone.layer4[0].conv2.dilation == (2, 2)  # the dilated layout kept
        model.train()  # the auxiliary head's loss runs on the slim stage-3 output
        losses = model(**_segmentation_batch(model), mode='loss')
        assert torch.isfinite(model.parse_losses(losses)[0])
        model.eval()
    result = inference_model(model, np.zeros((SIZE, SIZE, 3), np.uint8))
    assert result.pred_sem_seg.data.shape[-2:] == (SIZE, SIZE)


# -- DDP: 2 processes, gloo --------------------------------------------------------------------
def test_structured_retinanet_in_two_processes(coco, tmp_path):
    from mmdet.apis import init_detector
    cfg = tiny_intask_cfg('l1-global_retinanet_r50_fpn_1x_coco.py', coco, tmp_path / 'work',
                          epochs=2, num_steps=2)
    cfg.train_dataloader.batch_size = 1  # one image per process
    config = str(tmp_path / 'ddp.py')
    cfg.dump(config)
    log = dist_train(config, tmp_path / 'work')
    assert log.count('channel masks identical on 2 ranks') == 2, log[-3000:]
    _, written, checkpoint = check_written_model(tmp_path / 'work', 'slim')
    assert 'slim RetinaNet written' in log
    init_detector(written, checkpoint, device='cpu')
