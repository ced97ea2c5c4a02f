"""Tickets and ticket headers are data: a file that names code, or holds anything outside the
ticket schema, is refused on every path that reads one, and nothing it names is built.

The crafted tickets are plain data (they load with ``torch.load(weights_only=True)``): the
attack is in what they *name*, e.g. ``backbone.type = 'subprocess.run'``, which MMEngine's
registry would resolve to the real function and call with the file's keyword arguments.
"""
import copy
import json
import os
import os.path as osp
import re
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
DET_CFG = osp.join(REPO,
                   'configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py')
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


# -- the weights: each entry what a backbone state_dict holds under its name --------------------
W = 'layer1.0.conv1.weight'


def _set(name, value):
    return lambda p: p['state_dict'].__setitem__(name, value)


def _fill(name, value):
    return lambda p: p['state_dict'][name].fill_(value)


#: ``{attack: (edit of a good ticket, entry the refusal names, what it says)}``; without the
#: checks each loaded silently: cast to float, NaN in the outputs, a step count of -2**63
WEIGHT_ATTACKS = {
    'int64 conv weight (cast silently)': (
        _set(W, torch.zeros(8, 8, 3, 3, dtype=torch.int64)), W, 'floating point.*int64'),
    'bool conv weight (cast silently)': (
        _set(W, torch.ones(8, 8, 3, 3, dtype=torch.bool)), W, 'floating point.*bool'),
    'uint8 BN bias': (_set('bn1.bias', torch.zeros(8, dtype=torch.uint8)), 'bn1.bias',
                      'floating point'),
    'NaN conv weight': (_fill(W, float('nan')), W, 'NaN or infinite'),
    'infinite BN running_mean': (_fill('bn1.running_mean', float('inf')),
                                 'bn1.running_mean', 'NaN or infinite'),
    'NaN in one entry of a half-precision weight': (
        lambda p: (_set(W, p['state_dict'][W].half())(p), p['state_dict'][W].view(-1)
                   .__setitem__(5, float('nan'))), W, 'NaN or infinite'),
    'negative BN running_var': (_fill('bn1.running_var', -1.0), 'bn1.running_var',
                                'negative values'),
    'float num_batches_tracked 1e30 (wraps to -2**63)': (
        _set('bn1.num_batches_tracked', torch.tensor(1e30)), 'bn1.num_batches_tracked',
        'int64 scalar >= 0.*float32'),
    'negative num_batches_tracked': (
        _set('bn1.num_batches_tracked', torch.tensor(-5)), 'bn1.num_batches_tracked',
        'int64 scalar >= 0.*holding -5'),
    'num_batches_tracked that is no scalar': (
        _set('bn1.num_batches_tracked', torch.zeros(3, dtype=torch.int64)),
        'bn1.num_batches_tracked', r'int64 scalar >= 0.*shape \[3\]'),
}


@pytest.mark.parametrize('name', list(WEIGHT_ATTACKS))
def test_weight_entry_refused_by_name(tmp_path, good_ticket, name):
    edit, entry, problem = WEIGHT_ATTACKS[name]
    payload = copy.deepcopy(good_ticket)
    edit(payload)
    path = tmp_path / 'crafted.pth'
    torch.save(payload, path)
    torch.load(path, weights_only=True)  # plain data: a weights-only load accepts it
    said = rf"state_dict entry '{entry}': .*{problem}"
    with pytest.raises(TicketError, match=said):
        load_ticket(str(path))
    with pytest.raises(TicketError, match=said):
        build_backbone_from_ticket(ticket=str(path), out_indices=(0, 1, 2, 3))
    # the project's own writer refuses it too (what it writes, it can read back)
    with pytest.raises(TicketError, match=said):
        save_ticket(str(tmp_path / 'resaved.pth'), CFG, payload['state_dict'], method='x')


def test_weight_entry_refused_in_a_carried_header(tmp_path, good_ticket):
    """A detector checkpoint that carries the ticket: its backbone weights are the ticket's and
    are checked alike before anything is built from them."""
    from mmdet.apis import init_detector
    from mmengine.config import Config
    header = {k: copy.deepcopy(good_ticket[k]) for k in ('meta', 'channel_structure', 'masks')}
    state = {f'backbone.{k}': v.clone() for k, v in good_ticket['state_dict'].items()}
    state[f'backbone.{W}'].view(-1)[0] = float('nan')
    state['backbone.ticket'] = torch.frombuffer(bytearray(ticket_bytes(header)),
                                                dtype=torch.uint8)
    torch.save(dict(state_dict=state, meta={}), tmp_path / 'detector.pth')
    cfg = Config.fromfile(DET_CFG)
    cfg.model.backbone.ticket = str(tmp_path / 'absent.pth')
    with pytest.raises(TicketError, match=rf"'{W}': holds NaN"):
        init_detector(cfg, str(tmp_path / 'detector.pth'), device='cpu')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_tickets_of_every_float_dtype_still_load(tmp_path, dtype):
    """What the checks must not refuse: a backbone exported in another precision (its BN step
    counts stay int64: ``Module.to(dtype)`` casts floating point tensors only)."""
    from mmdet.models.backbones import ResNet
    net = ResNet(depth=18, base_channels=8).to(dtype)
    path = save_ticket(str(tmp_path / 't.pth'), CFG, net.state_dict(), method='test')
    backbone = build_backbone_from_ticket(ticket=path)
    for name, value in net.state_dict().items():
        assert torch.equal(backbone.state_dict()[name], value.to(torch.float32)
                           if value.is_floating_point() else value), name


# -- the config's size: bounded by the weights the file holds -----------------------------------
#: Builds each ticket in a fresh process whose address space may grow by at most 1 GiB: a
#: regression that builds the ticket's config before comparing it with the weights asks for
#: hundreds of GB and fails there with an allocation error (or is killed), never on this machine.
_BOUNDED_CHILD = r'''
import json, resource, sys
import torch
torch.set_num_threads(1)
from mmrecprune.analysis import load_models
from mmrecprune.models.pruned_backbone import build_backbone_from_ticket
def vm_bytes():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith('VmSize:'))
limit = vm_bytes() + 2 ** 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path, how in json.loads(sys.argv[1]):
    try:
        if how == 'analyze':  # what tools/analysis_tools/analyze_ticket.py does
            load_models(path)
        else:
            net = build_backbone_from_ticket(ticket=path, out_indices=(0, 1, 2, 3))
            torch.save(net.state_dict(), path + '.built')
        result = dict(outcome='built')
    except BaseException as err:
        result = dict(outcome=type(err).__name__, message=str(err))
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
    print(json.dumps(dict(result, path=path, how=how, growth=growth)), flush=True)
'''

WIDE = dict(type='mmdet.ResNet', depth=152, base_channels=4096)  # ~ 1 TB of float32 weights


def _build_bounded(cases):
    result = subprocess.run([sys.executable, '-c', _BOUNDED_CHILD, json.dumps(cases)], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    done = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
    assert len(done) == len(cases), f'the child died (rc {result.returncode}) after ' \
                                    f'{len(done)} of {len(cases)}: {result.stderr[-2000:]}'
    return done


def _wide_tickets(folder, good):
    """``{name: (path, what the refusal says)}``: small files whose config is ``WIDE`` (or as
    wide), each accepted by the schema; written with ``save_ticket`` where it accepts them."""
    from mmdet.models.backbones import ResNet
    small = {k: v.clone() for k, v in good['state_dict'].items()}
    with torch.device('meta'):  # only the names
        wide_names = list(ResNet(**{k: v for k, v in WIDE.items() if k != 'type'})
                          .state_dict())
    scalars = {k: torch.tensor(0) if k.endswith('num_batches_tracked') else torch.ones(1)
               for k in wide_names}
    empty = copy.deepcopy(good)
    empty['state_dict'], empty['meta']['backbone'] = {}, dict(WIDE)
    torch.save(empty, osp.join(folder, 'empty.pth'))  # save_ticket refuses it: crafted
    return {
        'no weights at all': (osp.join(folder, 'empty.pth'), r'holds no weights'),
        "ResNet-18's weights under a ResNet-152 config": (
            save_ticket(osp.join(folder, 'deeper.pth'), WIDE, small, method='x'),
            r'ticket weights do not fit the backbone.*depth=152, base_channels=4096.*'
            r'missing \[.*Nothing was built'),
        'the same names at 1/512 of the width': (
            save_ticket(osp.join(folder, 'wider.pth'), dict(CFG, base_channels=4096), small,
                        method='x'),
            r"ticket weight 'conv1.weight' has shape \(8, 3, 7, 7\).*expects "
            r'\(4096, 3, 7, 7\).*nothing was built'),
        "every name of the wide backbone, one value each": (
            save_ticket(osp.join(folder, 'scalars.pth'), WIDE, scalars, method='x'),
            r"ticket weight 'conv1.weight' has shape \(1,\).*expects \(4096, 3, 7, 7\)"),
    }


def test_config_wider_than_its_weights_is_refused_before_allocating(tmp_path, good_ticket):
    """A 1 KB file may describe a backbone of hundreds of GB: depth and base_channels within
    the schema's ranges. The config is compared with the file's weights before any memory is
    taken, on every path that builds from a ticket (PrunedBackbone and analyze_ticket)."""
    tickets = _wide_tickets(str(tmp_path), good_ticket)
    cases = [[path, how] for path, _ in tickets.values() for how in ('build', 'analyze')]
    said = {path: problem for path, problem in tickets.values()}
    for case in _build_bounded(cases):
        assert case['outcome'] == 'TicketError', case
        assert re.search(said[case['path']], case['message']), case
        assert case['growth'] < 256 * 2 ** 20, case  # nothing of the config's size was built
    for path, _ in tickets.values():
        assert os.path.getsize(path) < 2 ** 20  # files under 1 MB, configs of ~1 TB


def test_structured_ticket_allocates_its_slim_shapes_only(tmp_path):
    """The legitimate extreme: a structured ticket whose dense backbone (base_channels 4096,
    about 180 GB) was slimmed to a few thousand weights per layer builds, and exactly the slim
    model is allocated: the dense one never is (the memory-bounded child would fail);
    analyze_ticket, which builds the dense one to measure it, refuses it by its size."""
    from mmdet.models.backbones import ResNet
    slim = ResNet(depth=18, base_channels=8)
    with torch.no_grad():  # statistics other than the initial ones, which a build also has
        for name, buf in slim.named_buffers():
            if name.endswith(('running_mean', 'running_var')):
                buf.uniform_(0.5, 1.5)
    structure = {name: dict(zip(('in', 'out'), _widths(m))) for name, m in slim.named_modules()
                 if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))}
    path = save_ticket(str(tmp_path / 'slim.pth'), dict(CFG, base_channels=4096),
                       slim.state_dict(), channel_structure=structure, method='x')
    build, analyze = _build_bounded([[path, 'build'], [path, 'analyze']])
    assert build['outcome'] == 'built', build
    assert build['growth'] < 256 * 2 ** 20, build
    # analyze_ticket also builds the dense backbone (to measure it): refused by its size, on
    # the meta device, before any of it is allocated
    assert analyze['outcome'] == 'CLIError', analyze
    assert re.search(r'dense backbone \(mmdet.ResNet, depth=18, base_channels=4096\) takes '
                     r'\d+\.\d GB, over the 4 GB.*--max-dense-gb', analyze['message']), analyze
    assert analyze['growth'] < 256 * 2 ** 20, analyze
    built = torch.load(path + '.built', weights_only=True)
    assert set(built) == set(slim.state_dict()) | {'ticket'}
    for name, value in slim.state_dict().items():
        assert torch.equal(built[name], value), name


def _widths(module):
    if isinstance(module, torch.nn.Conv2d):
        return module.in_channels, module.out_channels
    return module.num_features, module.num_features


@pytest.mark.parametrize('cfg', [
    dict(type='mmdet.ResNet', depth=50, base_channels=8, norm_cfg=dict(type='GN', num_groups=2)),
    dict(type='mmdet.ResNetV1d', depth=50, base_channels=8),
    dict(type='mmdet.MobileNetV2', widen_factor=0.25),
    dict(type='mmseg.ResNet', depth=18, base_channels=8, stem_channels=8),
    dict(type='mmseg.ResNetV1c', depth=18, base_channels=8, stem_channels=8),
    dict(type='mmseg.ResNetV1d', depth=18, base_channels=8, stem_channels=8),
], ids=lambda cfg: cfg['type'])
def test_every_schema_backbone_builds_from_its_ticket(tmp_path, cfg):
    """Built on the meta device, checked, then given memory and the ticket's weights: every
    backbone type of the schema computes what the network it was exported from computes."""
    from mmrecprune.ticket_schema import build_ticket_backbone
    torch.manual_seed(0)
    net = build_ticket_backbone(dict(cfg))
    path = save_ticket(str(tmp_path / 't.pth'), cfg, net.state_dict(), method='test')
    backbone = build_backbone_from_ticket(ticket=path)
    net.eval(), backbone.eval()  # not chained: mmdet's ResNet.train() returns None
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for got, expected in zip(backbone(x), net(x)):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
