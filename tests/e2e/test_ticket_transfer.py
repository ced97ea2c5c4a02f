"""Unstructured tickets fine-tuned inside real mmdet / mmseg runners keep their zeros."""
import pytest

from mmrecprune.tickets import load_ticket
from tests.conftest import UNSTRUCTURED_60, export_test_ticket, train_downstream


@pytest.fixture(scope='module')
def ticket(tmp_path_factory):
    return export_test_ticket(
        tmp_path_factory.mktemp('ticket') / 'ticket.pth',
        dict(type='mmdet.ResNet', depth=18, base_channels=8, out_indices=[3]), UNSTRUCTURED_60)


def _assert_zeros_kept(model, ticket_path):
    ticket = load_ticket(ticket_path)
    state = model.backbone.state_dict()
    moved = 0
    for name, mask in ticket.masks.items():
        assert not state[name][~mask].any(), name
        moved += int((state[name][mask] != ticket.state_dict[name][mask]).sum())
    assert moved > 0  # the surviving weights did train


def test_detector_fine_tunes_on_ticket_with_zeros_kept(tmp_path, scenes, ticket):
    runner = train_downstream(
        'configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py', tmp_path,
        scenes, ticket, 2, base_channels=8)
    _assert_zeros_kept(runner.model, ticket)


@pytest.mark.parametrize('config', ['fpn_r18-w16-ticket_1k_fashionscenes.py',
                                    'fcn_r18-w16-ticket-d8_1k_fashionscenes.py'])
def test_segmenter_fine_tunes_on_ticket_with_zeros_kept(tmp_path, scenes, ticket, config):
    runner = train_downstream(f'configs/downstream/mmseg/{config}', tmp_path, scenes, ticket, 4,
                              base_channels=8)
    _assert_zeros_kept(runner.model, ticket)
