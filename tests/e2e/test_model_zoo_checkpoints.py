"""Model-zoo checkpoints in, a ticket for mmdet's own config out: a ResNet-50 pruning run starts
from an mmpretrain-, a torchvision- or an mmdet-format checkpoint (built here from random
weights with the real key names), and tools/model_converters/starting_weights.py checks and
converts them."""
import subprocess
import sys

import pytest
import torch
from mmdet.models.backbones import ResNet
from mmengine.runner import Runner

from mmrecprune.tickets import load_ticket
from tests.conftest import REPO, tiny_cls_cfg
from tests.models.test_shipped_configs import DET_BACKBONE, build_and_step, user_config

IMP = 'configs/imp/imp_r18-w16_7r-1e_fashionmnist.py'
RETINANET = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'


def _backbone_state(seed, width=64):
    torch.manual_seed(seed)
    return ResNet(depth=50, base_channels=width).state_dict()


def zoo_checkpoint(path, fmt, width=64):
    """A checkpoint as the model zoos write them, from random weights."""
    backbone = _backbone_state(0, width)
    fc = dict(weight=torch.randn(1000, width * 32), bias=torch.zeros(1000))
    if fmt == 'mmpretrain':
        state = {**{f'backbone.{k}': v for k, v in backbone.items()},
                 **{f'head.fc.{k}': v for k, v in fc.items()}}
        payload = dict(state_dict=state, meta=dict(mmpretrain_version='1.2.0', epoch=100))
    elif fmt == 'torchvision':
        payload = {**{k: v for k, v in backbone.items() if 'num_batches_tracked' not in k},
                   **{f'fc.{k}': v for k, v in fc.items()}}
    else:  # an mmdet RetinaNet checkpoint: the backbone plus a neck and a head
        state = {f'backbone.{k}': v for k, v in backbone.items()}
        state.update({'neck.lateral_convs.0.conv.weight': torch.randn(256, width * 8, 1, 1),
                      'bbox_head.retina_cls.weight': torch.randn(720, 256, 3, 3)})
        payload = dict(state_dict=state, meta=dict(mmdet_version='3.3.0'))
    torch.save(payload, path)
    return str(path), backbone


def r50_imp_cfg(work_dir, load_from):
    cfg = tiny_cls_cfg(work_dir, config=IMP, train_size=8, val_size=8, batch_size=4,
                       max_epochs=1, base_channels=64)
    cfg.model.backbone.depth = 50
    cfg.model.in_channels = 2048
    cfg.load_from = load_from
    cfg.custom_hooks[0].update(rounds=1, epochs_per_round=1)
    return cfg


@pytest.mark.parametrize('fmt', ['mmpretrain', 'torchvision', 'mmdet'])
def test_pruning_starts_from_a_model_zoo_checkpoint_and_the_ticket_fits_mmdet(tmp_path, fmt):
    src, backbone = zoo_checkpoint(tmp_path / f'{fmt}.pth', fmt)
    Runner.from_cfg(r50_imp_cfg(tmp_path / 'prune', src)).train()
    path = str(tmp_path / 'prune' / 'tickets' / 'round_1.pth')
    ticket = load_ticket(path)
    # rewound to the starting weights: the kept entries are the zoo checkpoint's
    for name, mask in ticket.masks.items():
        assert torch.equal(ticket.state_dict[name][mask], backbone[name][mask]), name
    build_and_step(user_config(tmp_path, RETINANET, DET_BACKBONE, path), path)


def _convert(src, dst):
    return subprocess.run(
        [sys.executable, 'tools/model_converters/starting_weights.py', src, dst, '--config',
         IMP], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize('fmt', ['mmpretrain', 'torchvision', 'mmdet'])
def test_converter_checks_and_writes_starting_weights(tmp_path, fmt):
    src, backbone = zoo_checkpoint(tmp_path / f'{fmt}.pth', fmt, width=16)
    src_r18 = tmp_path / 'r18.pth'
    torch.manual_seed(0)
    r18 = ResNet(depth=18, base_channels=16).state_dict()
    payload = {'state_dict': {f'backbone.{k}': v for k, v in r18.items()}} \
        if fmt != 'torchvision' else dict(r18)
    torch.save(payload, src_r18)
    dst = str(tmp_path / 'converted.pth')
    result = _convert(str(src_r18), dst)
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(dst, weights_only=True)['state_dict']
    assert all(torch.equal(state[f'backbone.{k}'], v) for k, v in r18.items()
               if 'num_batches_tracked' not in k)
    # the ResNet-50 checkpoint does not fit the ResNet-18 config: named, nothing written
    result = _convert(src, str(tmp_path / 'refused.pth'))
    assert result.returncode != 0 and 'do not fit model.backbone' in result.stderr
    assert 'nothing was written' in result.stderr
    assert not (tmp_path / 'refused.pth').exists()


def test_converter_refuses_a_file_that_is_no_checkpoint(tmp_path):
    bad = tmp_path / 'notes.pth'
    bad.write_text('not a checkpoint')
    result = _convert(str(bad), str(tmp_path / 'out.pth'))
    assert result.returncode != 0 and 'is not a readable checkpoint' in result.stderr
    assert not (tmp_path / 'out.pth').exists()
