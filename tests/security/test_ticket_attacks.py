"""Tickets and ticket headers are data: a file that names code, or holds anything outside the
ticket schema, is refused on every path that reads one, and nothing it names is built.

The crafted tickets are plain data (they load with ``torch.load(weights_only=True)``): the
attack is in what they *name*, e.g. ``backbone.type = 'subprocess.run'``, which MMEngine's
registry would resolve to the real function and call with the file's keyword arguments.
"""
import copy
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmrecprune.fileio import read_plain
from mmrecprune.models.pruned_backbone import build_backbone_from_ticket
from mmrecprune.tickets import TicketError, load_ticket, save_ticket, ticket_bytes
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures('single_thread')
CFG = dict(type='mmdet.ResNet', depth=18, base_channels=8)
DET_CFG = osp.join(REPO, 'configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py')
SEG_CFG = osp.join(REPO, 'configs/downstream/mmseg/fpn_r18-w16-ticket_1k_fashionscenes.py')


@pytest.fixture(scope='module')
def good_ticket(tmp_path_factory):
    from mmdet.models.backbones import ResNet
    net = ResNet(depth=18, base_channels=8)
    path = tmp_path_factory.mktemp('good') / 'ticket.pth'
    return read_plain(save_ticket(str(path), CFG, net.state_dict(), method='test'))


def _attacks(marker):
    """``{name: edit of a ticket payload}``; each edit would run code or allocate without
    bound if the ticket were trusted."""
    touch = ['touch', str(marker)]

    def backbone(**cfg):
        return lambda p: p['meta'].__setitem__('backbone', cfg)

    return {
        'backbone type subprocess.run': backbone(type='subprocess.run', args=touch),
        'backbone type builtins.exec': backbone(type='builtins.exec',
                                                source=f'open({str(marker)!r}, "w")'),
        'backbone type os.system': backbone(type='os.system', command=f'touch {marker}'),
        'backbone type of a registry in another scope': backbone(type='mmdet.RetinaNet'),
        'backbone type PrunedBackbone (recursion)': backbone(type='mmrecprune.PrunedBackbone',
                                                             ticket='x.pth'),
        'norm_cfg type subprocess.run': backbone(
            type='mmdet.ResNet', depth=18, base_channels=8,
            norm_cfg=dict(type='subprocess.run', args=touch)),
        'conv_cfg naming a layer': backbone(type='mmdet.ResNet', depth=18, base_channels=8,
                                            conv_cfg=dict(type='posix.system')),
        'plugins naming a class': backbone(type='mmdet.ResNet', depth=18, base_channels=8,
                                           plugins=[dict(cfg=dict(type='builtins.exec'))]),
        'unknown backbone key': backbone(type='mmdet.ResNet', depth=18, base_channels=8,
                                         init_cfg=dict(type='Pretrained', checkpoint='x')),
        'depth out of range': backbone(type='mmdet.ResNet', depth=10 ** 6),
        'huge width': backbone(type='mmdet.ResNet', depth=18, base_channels=2 ** 30),
        'unknown meta key': lambda p: p['meta'].__setitem__('hook', 'builtins.exec'),
        'meta value of the wrong type': lambda p: p['meta'].__setitem__('step', 'seven'),
        'unknown top-level key': lambda p: p.__setitem__('optimizer', {}),
        'channel structure that grows a layer (allocation bomb)': lambda p: (
            p['meta'].__setitem__('kind', 'structured'),
            p.__setitem__('channel_structure', {'conv1': {'in': 3, 'out': 65536}})),
        'channel structure naming a non-layer': lambda p: (
            p['meta'].__setitem__('kind', 'structured'),
            p.__setitem__('channel_structure', {'__class__': {'in': 1, 'out': 1}})),
        'kind that does not match the content': lambda p: p['meta'].__setitem__(
            'kind', 'unstructured'),
        'mask bits of the wrong length': lambda p: (
            p['meta'].__setitem__('kind', 'unstructured'),
            p.__setitem__('masks', {'conv1.weight': dict(
                bits=torch.zeros(3, dtype=torch.uint8), shape=[8, 3, 7, 7])})),
        # N:M tickets: the pattern is typed, and the masks must hold it
        'nm kind without masks': lambda p: p['meta'].update(kind='nm', pattern='2:4'),
        'pattern on a dense ticket': lambda p: p['meta'].__setitem__('pattern', '2:4'),
        'pattern that is no N:M string': lambda p: (
            p['meta'].update(kind='nm', pattern='2:4; builtins.exec'), _all_kept(p)),
        'pattern of huge groups (allocation bomb)': lambda p: (
            p['meta'].update(kind='nm', pattern='1000000:2000000'), _all_kept(p)),
        'pattern given as ints': lambda p: (p['meta'].update(kind='nm', pattern=[2, 4]),
                                            _all_kept(p)),
        'nm masks that break the pattern': lambda p: (
            p['meta'].update(kind='nm', pattern='2:4'), _all_kept(p)),
        'nm mask with a fill value': lambda p: (
            p['meta'].update(kind='nm', pattern='2:4'), _all_kept(p, pruned=True),
            p['masks']['layer1.0.conv1.weight'].__setitem__('fill', torch.tensor(0.5))),
    }


def _all_kept(payload, pruned=False):
    """A mask on layer1.0.conv1 keeping every entry (or, ``pruned``, the first 2 of every 4
    input channels, the pruned ones holding 0.5: a fill value)."""
    name = 'layer1.0.conv1.weight'
    weight = payload['state_dict'][name]
    mask = torch.ones_like(weight, dtype=torch.bool)
    if pruned:
        mask.view(weight.shape[0], -1, 4, *weight.shape[2:])[:, :, 2:] = False
        weight[~mask] = 0.5
    from mmrecprune.sparsity import pack_mask
    payload['masks'] = {name: dict(bits=pack_mask(mask), shape=list(weight.shape))}


ATTACKS = list(_attacks('x'))


def _crafted(good, tmp_path, name):
    marker = tmp_path / 'ran'
    payload = copy.deepcopy(good)
    _attacks(marker)[name](payload)
    path = tmp_path / 'crafted.pth'
    torch.save(payload, path)  # plain data: a weights-only load accepts it
    torch.load(path, weights_only=True)
    return str(path), marker


@pytest.mark.parametrize('name', ATTACKS)
def test_ticket_refused(tmp_path, good_ticket, name):
    path, marker = _crafted(good_ticket, tmp_path, name)
    with pytest.raises(TicketError):
        load_ticket(path)
    with pytest.raises(TicketError):
        build_backbone_from_ticket(ticket=path, out_indices=(0, 1, 2, 3))
    assert not marker.exists()


@pytest.mark.parametrize('header_as', ['tensor', 'dict'])
@pytest.mark.parametrize('name', ATTACKS[:3] + ATTACKS[5:6])
def test_checkpoint_header_refused_without_ticket_file(tmp_path, good_ticket, name, header_as):
    """The "checkpoint alone" flow: ``init_detector`` on a shipped ticket config whose ticket
    file is absent builds the backbone from the checkpoint's header, which is checked first
    (an old checkpoint's dict header as well as the uint8 tensor of today)."""
    from mmdet.apis import init_detector
    marker = tmp_path / 'ran'
    header = {k: copy.deepcopy(good_ticket[k]) for k in ('meta', 'channel_structure', 'masks')}
    _attacks(marker)[name](header)
    entry = torch.frombuffer(bytearray(ticket_bytes(header)), dtype=torch.uint8) \
        if header_as == 'tensor' else header
    state = {f'backbone.{k}': v for k, v in good_ticket['state_dict'].items()}
    state['backbone.ticket'] = entry
    ckpt = tmp_path / 'detector.pth'
    torch.save(dict(state_dict=state, meta={}), ckpt)
    from mmengine.config import Config
    cfg = Config.fromfile(DET_CFG)
    cfg.model.backbone.ticket = str(tmp_path / 'absent.pth')
    with pytest.raises(TicketError):
        init_detector(cfg, str(ckpt), device='cpu')
    assert not marker.exists()


def test_mmseg_init_model_refuses_ticket(tmp_path, good_ticket):
    from mmengine.config import Config
    from mmseg.apis import init_model
    path, marker = _crafted(good_ticket, tmp_path, 'backbone type subprocess.run')
    cfg = Config.fromfile(SEG_CFG)
    cfg.model.backbone.ticket = path
    with pytest.raises(TicketError):
        init_model(cfg, device='cpu')
    assert not marker.exists()


@pytest.mark.parametrize('tool', [
    ['tools/analysis_tools/analyze_ticket.py', '{ticket}'],
    ['tools/deployment/pytorch2onnx.py', '--ticket', '{ticket}',
     '--out', '{tmp}/model.onnx'],
    ['tools/test.py', DET_CFG, '{tmp}/none.pth',
     '--cfg-options', 'model.backbone.ticket={ticket}'],
], ids=['analyze_ticket', 'pytorch2onnx', 'test'])
def test_tools_refuse_ticket(tmp_path, good_ticket, tool):
    path, marker = _crafted(good_ticket, tmp_path, 'backbone type subprocess.run')
    torch.save({}, tmp_path / 'none.pth')  # a checkpoint file for tools/test.py to find
    args = [a.format(ticket=path, tmp=tmp_path) for a in tool]
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode != 0
    assert 'subprocess.run' in result.stderr and 'not a supported backbone' in result.stderr
    assert not marker.exists()
