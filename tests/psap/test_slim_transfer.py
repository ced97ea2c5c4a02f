"""A slim (structured) ticket trains inside the shipped mmdet / mmseg configs unchanged.

The ticket is ResNet-18 at the configs' own width (base_channels=16), so the configs are used as
shipped apart from the ticket path and the data / schedule shrinking every test needs.
"""
import pytest
import torch
from mmdet.models.backbones import ResNet
from mmengine.config import Config
from mmengine.runner import Runner

from mmrecprune.methods.psap import PSAPPruner
from mmrecprune.tickets import load_ticket, save_ticket
from tests.conftest import repo_path, shrink_downstream_cfg


@pytest.fixture(scope='module')
def slim_ticket(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('ticket') / 'slim.pth')
    torch.manual_seed(0)
    net = ResNet(depth=18, base_channels=16)
    pruner = PSAPPruner(net, torch.randn(1, 3, 64, 64), dict(flops=0.5), 1)
    pruner.step()
    slim, structure = pruner.slim_copy()
    save_ticket(path, dict(type='mmdet.ResNet', depth=18, base_channels=16, out_indices=[3]),
                slim.state_dict(), channel_structure=structure, method='psap')
    return path


def _assert_slim_and_trained(model, ticket_path):
    ticket = load_ticket(ticket_path)
    state = model.backbone.state_dict()
    for name, sizes in ticket.channel_structure.items():
        assert state[name + '.weight'].shape[0] == sizes['out'], name
    moved = sum(int((state[n] != w).sum()) for n, w in ticket.state_dict.items()
                if w.is_floating_point())
    assert moved > 0


def test_detector_trains_on_slim_ticket(tmp_path, scenes, slim_ticket):
    cfg = Config.fromfile(repo_path(
        'configs/downstream/mmdet/retinanet_r18-w16-slim_fpn_12e_fashionscenes.py'))
    cfg = shrink_downstream_cfg(cfg, tmp_path, scenes, slim_ticket)
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 1
    runner = Runner.from_cfg(cfg)
    runner.train()
    _assert_slim_and_trained(runner.model, slim_ticket)


@pytest.mark.parametrize('config', ['fpn_r18-w16-slim_1k_fashionscenes.py',
                                    'fcn_r18-w16-slim-d8_1k_fashionscenes.py',
                                    'deeplabv3_r18-w16-slim-d8_1k_fashionscenes.py'])
def test_segmenter_trains_on_slim_ticket(tmp_path, scenes, slim_ticket, config):
    cfg = Config.fromfile(repo_path('configs/downstream/mmseg', config))
    cfg = shrink_downstream_cfg(cfg, tmp_path, scenes, slim_ticket)
    cfg.model.data_preprocessor.size = (64, 64)
    cfg.train_cfg.max_iters = 2
    cfg.train_cfg.val_interval = 2
    cfg.default_hooks.checkpoint.interval = 2
    runner = Runner.from_cfg(cfg)
    runner.train()
    _assert_slim_and_trained(runner.model, slim_ticket)
    if config.startswith('deeplabv3'):
        assert type(runner.model.decode_head).__name__ == 'ASPPHead'
