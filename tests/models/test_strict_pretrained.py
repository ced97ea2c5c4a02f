"""A classifier checkpoint from tools/train.py initialises mmdet / mmseg backbones as is."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mmrecprune.registry import MODELS
from tests.conftest import tiny_cls_cfg


@pytest.fixture(scope='module')
def classifier_ckpt(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('cls')
    runner = Runner.from_cfg(tiny_cls_cfg(work_dir, max_epochs=1))
    runner.train()
    return str(work_dir / 'epoch_1.pth'), runner.model.backbone.state_dict()


def _build(config, init_type, checkpoint, base_channels=8):
    cfg = Config.fromfile(config)
    cfg.model.backbone.base_channels = base_channels
    cfg.model.backbone.init_cfg = dict(type=init_type, prefix='backbone.', checkpoint=checkpoint)
    if cfg.model.get('neck'):
        cfg.model.neck.in_channels = [base_channels * 2**i for i in range(4)]
    else:
        cfg.model.decode_head.in_channels = base_channels * 8
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        model.init_weights()
    return model


@pytest.mark.parametrize('init_type', ['Pretrained', 'mmrecprune.StrictPretrained'])
@pytest.mark.parametrize('config', [
    'configs/downstream/mmdet/retinanet_r18-w16_fpn_12e_fashionscenes.py',
    'configs/downstream/mmseg/fcn_r18-w16-d8_1k_fashionscenes.py',
    'configs/downstream/mmseg/fpn_r18-w16_1k_fashionscenes.py'])
def test_classifier_weights_load_without_key_surgery(classifier_ckpt, config, init_type):
    path, expected = classifier_ckpt
    model = _build(config, init_type, path)
    for name, value in expected.items():
        torch.testing.assert_close(model.backbone.state_dict()[name], value, msg=name)


def test_checkpoint_that_does_not_fit_is_refused(classifier_ckpt):
    path, _ = classifier_ckpt
    with pytest.raises(ValueError, match='does not fit ResNet.*shape mismatches'):
        _build('configs/downstream/mmdet/retinanet_r18-w16_fpn_12e_fashionscenes.py',
               'mmrecprune.StrictPretrained', path, base_channels=16)
    with pytest.raises(ValueError, match="no weights under prefix 'backbone.'"):
        cfg_path = 'configs/downstream/mmdet/retinanet_r18-w16_fpn_12e_fashionscenes.py'
        cfg = Config.fromfile(cfg_path)
        cfg.model.backbone.base_channels = 8
        cfg.model.neck.in_channels = [8, 16, 32, 64]
        cfg.model.backbone.init_cfg = dict(type='mmrecprune.StrictPretrained',
                                           prefix='backbone.', checkpoint=path)
        torch.save({'state_dict': {'fc.weight': torch.zeros(1)}}, path + '.other')
        cfg.model.backbone.init_cfg.checkpoint = path + '.other'
        with DefaultScope.overwrite_default_scope('mmdet'):
            MODELS.build(cfg.model).init_weights()
