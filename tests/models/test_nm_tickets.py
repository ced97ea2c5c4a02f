"""N:M tickets in ``PrunedBackbone``: built like unstructured tickets, masks fixed while
training, the pattern checked at load; the semi-structured option's CPU side: a 1x1 conv as a
matrix product on channels-last input equals the conv, and the option is refused, with the
reason, where no GPU can run it."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmrecprune.models import build_backbone_from_ticket
from mmrecprune.sparsity import (SemiStructuredConv2d, conv1x1_as_matmul,
                                 enable_semi_structured, nm_violations, semi_structured_report,
                                 semi_structured_unavailable)
from mmrecprune.testing.sources import export_test_ticket
from mmrecprune.tickets import TicketError, load_ticket

pytestmark = pytest.mark.usefixtures('single_thread')
R50 = dict(type='mmdet.ResNet', depth=50, base_channels=16, out_indices=[3])
NM_2TO4 = dict(type='OneShotMagnitudePruner', pattern='2:4', include=('*', ),
               exclude=('conv1.*', ))


@pytest.fixture(scope='module')
def nm_ticket(tmp_path_factory):
    """A 2:4 ticket of a quarter-width ResNet-50 (bottlenecks: 1x1 and 3x3 convs)."""
    return export_test_ticket(tmp_path_factory.mktemp('nm') / 'nm.pth', R50, NM_2TO4,
                              input_shape=(1, 3, 32, 32))


def test_nm_ticket_builds_and_keeps_its_masks_while_training(nm_ticket):
    ticket = load_ticket(nm_ticket)
    assert ticket.kind == 'nm' and ticket.meta['pattern'] == '2:4'
    backbone = build_backbone_from_ticket(nm_ticket, out_indices=(0, 1, 2, 3))
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    backbone.train()
    for _ in range(2):
        sum(o.square().mean() for o in backbone(torch.rand(2, 3, 32, 32))).backward()
        optimizer.step()
        optimizer.zero_grad()
    state = backbone.state_dict()
    for name, mask in ticket.masks.items():
        assert not state[name][~mask].any(), f'{name}: a pruned entry came back'
    assert nm_violations({n: state[n] != 0 for n in ticket.masks}, '2:4') == {}
    moved = sum(int((state[n][m] != ticket.state_dict[n][m]).sum())
                for n, m in ticket.masks.items())
    assert moved > 0


def test_random_mask_control_of_an_nm_ticket_is_nm_too(nm_ticket):
    ticket = load_ticket(nm_ticket)
    backbone = build_backbone_from_ticket(nm_ticket, masks='random', seed=3)
    state = backbone.state_dict()
    masks = {n: state[n] != 0 for n in ticket.masks}
    assert nm_violations(masks, '2:4') == {}
    assert any(not torch.equal(masks[n], ticket.masks[n]) for n in masks)
    # the checkpoint of a model trained on it carries an nm header that loads back
    copy.deepcopy(backbone).load_state_dict(backbone.state_dict())


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_1x1_conv_as_matmul_on_channels_last_input_equals_the_conv(stride, dtype, tol):
    """The sparse path's reshaping, with a dense weight: y[B*H*W, out] = x[B*H*W, in] @ W^T
    equals the conv to 1e-5 (float32; bfloat16: 2e-2, its rounding)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 32, 1, stride=stride, bias=True).to(dtype)
    x = torch.randn(3, 64, 9, 9, dtype=dtype).contiguous(memory_format=torch.channels_last)
    expected = F.conv2d(x, conv.weight, conv.bias, stride)
    got = conv1x1_as_matmul(x, conv.weight.flatten(1), conv.bias, conv.stride)
    assert got.shape == expected.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def test_sparse_capable_convs_run_dense_off_the_gpu():
    """Turned convs keep their weights and state_dict keys; on the CPU (and while training)
    they are the dense conv, so outputs are unchanged."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                        nn.Conv2d(16, 6, 1), nn.Conv2d(16, 8, 1, stride=2))
    with torch.no_grad():
        for conv in (net[0], net[3], net[4]):
            weight = conv.weight.view(conv.out_channels, -1, 4)
            weight[:, :, :2] = 0  # 2:4 along the input channels
    x = torch.randn(2, 8, 8, 8).contiguous(memory_format=torch.channels_last)
    expected = net[:4](x)
    keys = list(net.state_dict())
    report = enable_semi_structured(net)
    assert report == {'0': 'sparse', '2': 'a 3x3 conv (dense kernel with the mask)',
                      '3': 'sparse', '4': 'sparse'}
    assert isinstance(net[0], SemiStructuredConv2d) and list(net.state_dict()) == keys
    with torch.inference_mode():
        torch.testing.assert_close(net[:4](x), expected)
    assert semi_structured_report(net) == {'0': 'not compressed yet', '3': 'not compressed yet',
                                           '4': 'not compressed yet'}
    assert type(copy.deepcopy(net)[0]) is SemiStructuredConv2d


def test_convs_whose_mask_is_not_2to4_stay_dense():
    net = nn.Sequential(nn.Conv2d(8, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(6, 4, 1))
    masks = {'0.weight': torch.ones(4, 8, 1, 1, dtype=torch.bool)}
    report = enable_semi_structured(net, masks)
    assert report == {'0': 'its mask is not 2:4 along the input channels',
                      '1': 'not pruned (no mask)', '2': 'not pruned (no mask)'}
    assert enable_semi_structured(nn.Conv2d(6, 4, 1))[''] == \
        '6 input channels, not a multiple of 4'


@pytest.mark.skipif(semi_structured_unavailable() is None,
                    reason='this machine can run semi-structured sparse products')
def test_semi_structured_refused_with_the_reason_off_the_gpu(nm_ticket):
    with pytest.raises(ValueError, match=r'semi_structured=True .* compute capability 8\.0 .*'
                                         r'Leave semi_structured=False here: the ticket then '
                                         r'runs dense with its mask'):
        build_backbone_from_ticket(nm_ticket, semi_structured=True)
    assert 'no CUDA device' in semi_structured_unavailable() or \
        'to_sparse_semi_structured' in semi_structured_unavailable()


def test_semi_structured_option_checked_before_the_machine(nm_ticket, r18_tickets,
                                                           monkeypatch):
    import mmrecprune.sparsity.semi_structured as semi
    with pytest.raises(TicketError, match='must be True or False'):
        build_backbone_from_ticket(nm_ticket, semi_structured='yes')
    with pytest.raises(TicketError, match='needs keep_masks=True'):
        build_backbone_from_ticket(nm_ticket, semi_structured=True, keep_masks=False)
    # as on a GPU machine: an unstructured ticket is refused, a 2:4 one gets sparse 1x1 convs
    monkeypatch.setattr(semi, 'semi_structured_unavailable', lambda device=None: None)
    with pytest.raises(TicketError, match="needs an nm ticket of pattern '2:4'.*unstructured"):
        build_backbone_from_ticket(r18_tickets['unstructured'], semi_structured=True)
    backbone = build_backbone_from_ticket(nm_ticket, semi_structured=True)
    turned = semi_structured_report(backbone)
    assert turned and all(name.endswith(('conv1', 'conv3', 'downsample.0')) for name in turned)
    x = torch.rand(1, 3, 32, 32)
    dense = build_backbone_from_ticket(nm_ticket)
    backbone.eval(), dense.eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[0], dense(x)[0])
