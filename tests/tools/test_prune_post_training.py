"""tools/prune_post_training.py end to end on tiny real models in a tmp dir: a classifier
(real Fashion-MNIST subset), a RetinaNet and a Semantic FPN (the tiny scenes); the ticket loads
through the schema, the slim checkpoint with its written config; bad input gets one line."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmrecprune.cli import CLIError
from mmrecprune.registry import MODELS
from mmrecprune.tickets import load_ticket
from tests.conftest import repo_path, tiny_cls_cfg

pytestmark = pytest.mark.usefixtures('single_thread')


def _tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'prune_post_training', repo_path('tools', 'prune_post_training.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkpoint(cfg, path, seed=0):
    """A checkpoint of the config's model as ``tools/train.py`` writes one (random weights)."""
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmrecprune')):
        model = MODELS.build(cfg.model)
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict()), path)
    return str(path)


@pytest.fixture
def classifier(tmp_path):
    cfg = tiny_cls_cfg(tmp_path / 'train', train_size=48, val_size=16)
    config = str(tmp_path / 'classifier.py')
    cfg.dump(config)
    return config, _checkpoint(cfg, tmp_path / 'epoch_1.pth')


def test_classifier_end_to_end(tmp_path, classifier, capsys):
    config, ckpt = classifier
    out = str(tmp_path / 'out' / 'ticket.pth')
    argv = [config, ckpt, '--flops', '0.5', '--calibration-images', '32', '--batch-size', '16',
            '--speed-batch', '2', '--bn-recalibration', '--out', out,
            '--work-dir', str(tmp_path / 'wd'),
            '--out-json', str(tmp_path / 'result.json')]
    result = _tool().main(argv)
    printed = capsys.readouterr().out
    assert 'accuracy/top1' in printed and 'speed-up' in printed and 'before' in printed
    assert set(result['before']) == set(result['after'])
    assert result['backbone_flops_ratio'] <= 0.5 + 1e-3 and result['speedup'] > 0
    ticket = load_ticket(out)
    assert ticket.kind == 'structured' and ticket.meta['method'] == 'post_training'
    assert ticket.meta['recovery'] == 'least_squares+mean+bn'
    # the slim checkpoint loads into the config written beside it (through the safe loader)
    from mmrecprune.fileio import load_mmengine_checkpoint
    slim_cfg = Config.fromfile(result['config'])
    assert slim_cfg.model.backbone.type == 'mmrecprune.PrunedBackbone'
    with DefaultScope.overwrite_default_scope('mmrecprune'):
        model = MODELS.build(slim_cfg.model)
    model.load_state_dict(load_mmengine_checkpoint(result['model'])['state_dict'])
    assert osp.isfile(str(tmp_path / 'result.json'))
    # an existing output is refused, nothing is overwritten
    before = open(out, 'rb').read()
    with pytest.raises(CLIError, match='exists; pass --force'):
        _tool().main(argv[:-2])
    assert open(out, 'rb').read() == before


@pytest.mark.parametrize('argv,message', [
    (['--flops', '1.5'], r'--flops must be a fraction in \(0, 1\)'),
    (['--calibration-images', '0'], '--calibration-images must be >= 1'),
    (['--calibration-images', '4096'], 'the train split has only 48 images'),
])
def test_bad_settings_get_one_line(tmp_path, classifier, argv, message):
    config, ckpt = classifier
    with pytest.raises(CLIError, match=message) as err:
        _tool().main([config, ckpt, '--out', str(tmp_path / 't.pth'), '--work-dir',
                      str(tmp_path / 'wd'), *argv])
    assert '\n' not in str(err.value)
    assert not osp.exists(tmp_path / 't.pth')


@pytest.mark.parametrize('config', [
    'configs/downstream/mmdet/retinanet_r18-w16_fpn_12e_fashionscenes.py',
    'configs/downstream/mmseg/fpn_r18-w16_1k_fashionscenes.py',
])
def test_detector_and_segmentor(tmp_path, scenes, config):
    from tests.conftest import shrink_downstream_cfg
    cfg = Config.fromfile(repo_path(config))
    cfg.model.backbone.ticket = None
    cfg = shrink_downstream_cfg(cfg, tmp_path / 'wd', scenes, None)
    cfg.model.backbone.pop('ticket')
    cfg.model.backbone.pop('init_cfg', None)
    cfg.model.backbone.base_channels = 8
    if cfg.model.get('neck'):
        cfg.model.neck.in_channels = [8 * 2 ** i for i in range(4)]
    if cfg.default_scope == 'mmdet':
        cfg.model.test_cfg.score_thr = 0.0
    path = str(tmp_path / 'model.py')
    cfg.dump(path)
    ckpt = _checkpoint(cfg, tmp_path / 'model.pth')
    out = str(tmp_path / 'ticket.pth')
    result = _tool().main([path, ckpt, '--flops', '0.5', '--calibration-images', '8',
                           '--batch-size', '4', '--speed-batch', '1', '--out', out,
                           '--work-dir', str(tmp_path / 'wd')])
    assert load_ticket(out).meta['method'] == 'post_training'
    assert result['backbone_flops_ratio'] <= 0.5 + 1e-3
    assert result['model_flops_ratio'] < 1.0
    key = 'coco/bbox_mAP' if cfg.default_scope == 'mmdet' else 'mIoU'
    assert key in result['before'] and key in result['after']


def test_a_seed_is_one_calibration_set(tmp_path, classifier):
    """The train pipeline's random flip is seeded with the sample: same seed, same batches,
    whatever the global generators did in between (and they are put back)."""
    import random

    import numpy as np

    from mmrecprune.analysis import offline_runner
    from mmrecprune.analysis.post_training import calibration_batches
    cfg = Config.fromfile(classifier[0])
    cfg.work_dir = str(tmp_path / 'wd')
    runner = offline_runner(cfg)
    first = calibration_batches(runner, cfg, 24, seed=3, batch_size=8)
    np.random.rand(7)
    random.random()
    state = np.random.get_state()[1].copy()
    again = calibration_batches(runner, cfg, 24, seed=3, batch_size=8)
    assert (np.random.get_state()[1] == state).all()
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and len(first) == 3
    other = calibration_batches(runner, cfg, 24, seed=4, batch_size=8)
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
