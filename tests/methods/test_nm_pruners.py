"""The one-shot and iterative magnitude pruners with ``pattern='2:4'``: arguments checked in
``__init__``, masks N:M, tickets of kind 'nm' once the pattern is reached."""
import pytest
import torch
from mmdet.models.backbones import ResNet

from mmrecprune.methods import IterativeMagnitudePruner, OneShotMagnitudePruner
from mmrecprune.sparsity import nm_violations, sparsity_report
from mmrecprune.tickets import export_ticket, load_ticket

pytestmark = pytest.mark.usefixtures('single_thread')
CFG = dict(type='mmdet.ResNet', depth=18, base_channels=8, out_indices=[3])


def _net(seed=0):
    torch.manual_seed(seed)
    return ResNet(depth=18, base_channels=8, out_indices=[3])


@pytest.mark.parametrize('cls', [IterativeMagnitudePruner, OneShotMagnitudePruner])
@pytest.mark.parametrize('pattern', ['4:2', '2-4', 24, '2:4:8'])
def test_bad_pattern_refused_at_init(cls, pattern):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: pattern must be None .*'N:M'"):
        cls(pattern=pattern)


def test_one_shot_pattern_needs_its_sparsity_and_zeros():
    with pytest.raises(ValueError, match=r"pattern '1:4' prunes 0.75 .* set sparsity=0.75"):
        OneShotMagnitudePruner(pattern='1:4')
    with pytest.raises(ValueError, match="needs recovery='zero'"):
        OneShotMagnitudePruner(pattern='2:4', recovery='filter_abs_signed')
    assert OneShotMagnitudePruner(sparsity=0.75, pattern='1:4').pattern == '1:4'


def test_one_shot_2to4_ticket(tmp_path):
    net = _net()
    pruner = OneShotMagnitudePruner(pattern='2:4', include=('*', ))
    pruner.attach(net)
    with pytest.raises(ValueError, match="zeros, not 'filter_abs_signed'"):
        pruner.plan('filter_abs_signed')
    pruner.step()
    assert nm_violations(pruner.masks, '2:4') == {}
    assert sparsity_report(pruner.masks)['sparsity'] == 0.5
    for name, param in pruner.params.items():  # pruned entries exactly zero
        assert not param[~pruner.masks[name]].any(), name
    meta = export_ticket(str(tmp_path / 't.pth'), pruner, CFG, (1, 3, 32, 32), prefix='',
                         plot=False)
    ticket = load_ticket(str(tmp_path / 't.pth'))
    assert ticket.kind == 'nm' and meta['pattern'] == '2:4' and not ticket.fill_values
    assert ticket.meta['sparsity'] == 0.5


def test_iterative_rounds_reach_2to4_and_only_then_export_nm(tmp_path):
    net = _net()
    pruner = IterativeMagnitudePruner(prune_ratio=0.2, rewind_to='none', include=('*', ),
                                      pattern='2:4')
    pruner.attach(net)
    kinds = []
    for r in range(1, 5):
        pruner.step()
        path = str(tmp_path / f'round_{r}.pth')
        export_ticket(path, pruner, CFG, (1, 3, 32, 32), prefix='', plot=False)
        ticket = load_ticket(path)
        kinds.append((ticket.kind, round(ticket.meta['sparsity'], 3),
                      ticket.meta.get('pattern')))
    assert kinds == [('unstructured', 0.2, None), ('unstructured', 0.36, None),
                     ('unstructured', 0.488, None), ('nm', 0.5, '2:4')]
    assert pruner.pattern_reached


def test_iterative_one_round_at_half_is_2to4_and_rewinds(tmp_path):
    net = _net()
    pretrained = {k: v.clone() for k, v in net.state_dict().items()}
    pruner = IterativeMagnitudePruner(prune_ratio=0.5, include=('*', ), pattern='2:4',
                                      ranking='layerwise')
    pruner.attach(net)
    pruner.snapshot()
    with torch.no_grad():  # "training" moves the weights before the round ends
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    pruner.step()
    assert pruner.pattern_reached
    for name, mask in pruner.masks.items():
        weight = net.state_dict()[name]
        assert torch.equal(weight[mask], pretrained[name][mask])  # survivors rewound
        assert not weight[~mask].any()
    state = pruner.state_dict()
    fresh = IterativeMagnitudePruner(prune_ratio=0.5, include=('*', ), pattern='2:4')
    fresh.attach(_net())
    fresh.load_state_dict(state)
    assert fresh.pattern_reached and fresh.round == 1
