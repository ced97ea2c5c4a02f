"""The ticket meta's pruning counter: new tickets write ``step`` only; tickets written before
it had one name (``round``, or ``round`` and ``steps``) still load and build."""
import pytest
import torch

from mmrecprune.models import build_backbone_from_ticket
from mmrecprune.registry import MODELS
from mmrecprune.testing.sources import (ONE_SHOT_70_FILLED, STRUCTURED_50, UNSTRUCTURED_60,
                                        export_test_ticket)
from mmrecprune.tickets import TicketError, load_ticket, save_ticket, ticket_bytes, ticket_step

CFG = dict(type='mmdet.ResNet', depth=18, base_channels=8, out_indices=[3])


@pytest.mark.parametrize('pruner', [UNSTRUCTURED_60, STRUCTURED_50, ONE_SHOT_70_FILLED],
                         ids=['iterative', 'structured', 'one-shot'])
def test_new_ticket_carries_step_not_round(tmp_path, pruner):
    path = export_test_ticket(tmp_path / 't.pth', CFG, pruner, input_shape=(1, 3, 32, 32))
    ticket = load_ticket(path)
    assert ticket.meta['step'] == ticket.step == 1
    assert 'round' not in ticket.meta and 'steps' not in ticket.meta


def test_save_ticket_stores_earlier_counter_names_as_step(tmp_path):
    """A pruner written for earlier releases still passes ``round=``; the file says ``step``."""
    net = MODELS.build(CFG)
    save_ticket(str(tmp_path / 't.pth'), CFG, net.state_dict(), method='test', round=3,
                steps=3)
    meta = load_ticket(str(tmp_path / 't.pth')).meta
    assert meta['step'] == 3 and 'round' not in meta and 'steps' not in meta
    with pytest.raises(TicketError, match='different values'):
        save_ticket(str(tmp_path / 'u.pth'), CFG, net.state_dict(), step=3, round=2)


def _rewrite_as_before_step(path, counter):
    """The ticket at ``path`` as an earlier release wrote it: its counter under ``counter``'s
    keys instead of ``step`` (a plain weights-only file, as those releases wrote)."""
    payload = torch.load(path, map_location='cpu', weights_only=True)
    step = payload['meta'].pop('step')
    payload['meta'].update({key: step for key in counter})
    with open(path, 'wb') as f:
        f.write(ticket_bytes(payload))


@pytest.mark.parametrize('pruner,counter', [
    (UNSTRUCTURED_60, ('round', )),  # IMP / RecPrune tickets
    (STRUCTURED_50, ('round', 'steps'))],  # structured and post-training tickets
    ids=['round', 'round+steps'])
def test_ticket_written_before_step_loads_and_builds(tmp_path, pruner, counter):
    path = export_test_ticket(tmp_path / 'round_1.pth', CFG, pruner, input_shape=(1, 3, 32, 32))
    new = load_ticket(path)
    _rewrite_as_before_step(path, counter)
    old = load_ticket(path)
    assert 'step' not in old.meta and all(old.meta[key] == 1 for key in counter)
    assert old.step == ticket_step(old.meta) == 1
    x = torch.rand(2, 3, 32, 32)
    built = [build_backbone_from_ticket(path),
             MODELS.build(dict(type='mmrecprune.PrunedBackbone', ticket=path)),
             build_backbone_from_ticket(new)]
    for backbone in built:
        backbone.eval()  # mmdet's ResNet.train() returns None, so not chained
    with torch.no_grad():
        outs = [b(x)[-1] for b in built]
    torch.testing.assert_close(outs[0], outs[2])
    torch.testing.assert_close(outs[1], outs[2])
    # a checkpoint of a backbone built from the old ticket carries the old header: it loads
    # into a backbone built from the same ticket
    built[1].load_state_dict(built[0].state_dict())


def test_ticket_step_without_a_counter_is_none():
    assert ticket_step(dict(kind='dense')) is None
    assert ticket_step(dict(step=2, round=1)) == 2  # step first (save_ticket keeps them equal)
