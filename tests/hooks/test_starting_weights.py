"""A pruning run starts from the weights it was given, or stops: a torchvision-style state_dict
as ``load_from`` loads (it used to be ignored, and a ticket was pruned from random weights), and
a checkpoint of another architecture is refused with the keys named. ``StrictPretrained`` takes
the same file as a backbone with ``ignore_keys=('fc.',)``."""
import pytest
import torch
from mmdet.models.backbones import ResNet
from mmengine.runner import Runner

from mmrecprune.tickets import load_ticket
from tests.conftest import tiny_cls_cfg

pytestmark = pytest.mark.usefixtures('single_thread')


def torchvision_style(depth=18, base_channels=8, num_classes=10, seed=0):
    """A state_dict with torchvision's key names (no prefix, fc.*, no BN counters)."""
    torch.manual_seed(seed)
    net = ResNet(depth=depth, base_channels=base_channels)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith('num_batches_tracked')}
    width = base_channels * 8 * (4 if depth >= 50 else 1)
    state['fc.weight'] = torch.randn(num_classes, width)
    state['fc.bias'] = torch.randn(num_classes)
    return state


def _pruning_cfg(work_dir, load_from):
    cfg = tiny_cls_cfg(work_dir, config='configs/imp/imp_r18-w16_7r-1e_fashionmnist.py',
                       train_size=16, val_size=16, max_epochs=1)
    cfg.custom_hooks[0].update(rounds=1, epochs_per_round=1)
    cfg.train_cfg.val_interval = 1
    cfg.load_from = load_from
    return cfg


def test_torchvision_state_dict_is_the_start_of_pruning(tmp_path):
    state = torchvision_style()
    torch.save(state, tmp_path / 'resnet18_torchvision.pth')
    runner = Runner.from_cfg(_pruning_cfg(tmp_path / 'run',
                                          str(tmp_path / 'resnet18_torchvision.pth')))
    runner.train()
    ticket = load_ticket(str(tmp_path / 'run' / 'tickets' / 'round_1.pth'))
    # rewind_to='pretrained': the survivors are exactly the torchvision file's weights
    for name, mask in ticket.masks.items():
        torch.testing.assert_close(ticket.state_dict[name][mask], state[name][mask],
                                   rtol=0, atol=0)
    torch.testing.assert_close(ticket.state_dict['conv1.weight'], state['conv1.weight'])


def test_checkpoint_of_another_architecture_stops_the_run(tmp_path):
    torch.save(torchvision_style(depth=50, base_channels=8), tmp_path / 'resnet50.pth')
    runner = Runner.from_cfg(_pruning_cfg(tmp_path / 'run', str(tmp_path / 'resnet50.pth')))
    with pytest.raises(ValueError, match=r'do not fit model\.backbone.*shape mismatches.*'
                                         r'would start from random weights'):
        runner.train()
    assert not (tmp_path / 'run' / 'tickets').exists()


def test_unrelated_checkpoint_stops_the_run(tmp_path):
    torch.save({'state_dict': {'encoder.weight': torch.zeros(3)}}, tmp_path / 'other.pth')
    runner = Runner.from_cfg(_pruning_cfg(tmp_path / 'run', str(tmp_path / 'other.pth')))
    with pytest.raises(ValueError, match='backbone entries missing'):
        runner.train()


def test_strict_pretrained_takes_torchvision_backbone_with_ignore_keys(tmp_path):
    state = torchvision_style()
    path = str(tmp_path / 'tv.pth')
    torch.save(state, path)
    refused = ResNet(depth=18, base_channels=8,
                     init_cfg=dict(type='mmrecprune.StrictPretrained', checkpoint=path))
    with pytest.raises(ValueError, match=r"unexpected keys \['fc.bias', 'fc.weight'\].*"
                                         'ignore_keys'):
        refused.init_weights()
    net = ResNet(depth=18, base_channels=8, init_cfg=dict(
        type='mmrecprune.StrictPretrained', checkpoint=path, ignore_keys=('fc.', )))
    net.init_weights()
    for name, value in net.state_dict().items():
        if not name.endswith('num_batches_tracked'):
            assert torch.equal(value, state[name]), name
