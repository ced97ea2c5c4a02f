"""Ticket format: round trip, and every kind of bad file is refused without side effects."""
import os

import pytest
import torch
from mmdet.models.backbones import ResNet

from mmrecprune.models import build_backbone_from_ticket
from mmrecprune.sparsity import global_magnitude_masks, init_masks, prunable_parameters
from mmrecprune.tickets import TicketError, load_ticket, save_ticket

CFG = dict(type='mmdet.ResNet', depth=18, base_channels=8, out_indices=[3])


def _unstructured_ticket(path, sparsity_ratio=0.5):
    net = ResNet(depth=18, base_channels=8)
    params = prunable_parameters(net)
    masks = global_magnitude_masks(params, init_masks(params), sparsity_ratio)
    with torch.no_grad():
        for n, p in params.items():
            p.mul_(masks[n])
    save_ticket(str(path), CFG, net.state_dict(), masks=masks, method='test', step=1,
                sparsity=sparsity_ratio)
    return net, masks


def test_round_trip_builds_the_same_backbone(tmp_path):
    net, masks = _unstructured_ticket(tmp_path / 't.pth')
    ticket = load_ticket(str(tmp_path / 't.pth'))
    assert ticket.kind == 'unstructured' and ticket.meta['step'] == 1
    for n, m in masks.items():
        assert torch.equal(ticket.masks[n], m)
    backbone = build_backbone_from_ticket(str(tmp_path / 't.pth'), out_indices=(0, 1, 2, 3))
    x = torch.rand(2, 3, 32, 32)
    net.eval(), backbone.eval()
    torch.testing.assert_close(backbone(x)[3], net(x)[3])
    assert backbone.is_init  # the runner's init_weights() must not overwrite the ticket


def test_ticket_from_another_architecture_is_refused(tmp_path):
    _unstructured_ticket(tmp_path / 't.pth')
    ticket = load_ticket(str(tmp_path / 't.pth'))
    ticket.meta['backbone'] = dict(CFG, depth=34)
    with pytest.raises(TicketError, match='do not fit the backbone'):
        build_backbone_from_ticket(ticket)
    ticket.meta['backbone'] = dict(CFG, base_channels=16)
    with pytest.raises(TicketError, match='another architecture or width'):
        build_backbone_from_ticket(ticket)


def test_structure_options_are_refused(tmp_path):
    _unstructured_ticket(tmp_path / 't.pth')
    with pytest.raises(TicketError, match=r"options \['depth'\] it cannot apply"):
        build_backbone_from_ticket(str(tmp_path / 't.pth'), depth=50)


def test_truncated_and_foreign_files_are_refused(tmp_path):
    _unstructured_ticket(tmp_path / 't.pth')
    data = (tmp_path / 't.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(TicketError, match='truncated or corrupted'):
        load_ticket(str(tmp_path / 'cut.pth'))
    (tmp_path / 'text.pth').write_text('hello')
    with pytest.raises(TicketError, match='truncated or corrupted'):
        load_ticket(str(tmp_path / 'text.pth'))
    torch.save({'state_dict': {}}, tmp_path / 'ckpt.pth')
    with pytest.raises(TicketError, match='not an mmrecprune ticket'):
        load_ticket(str(tmp_path / 'ckpt.pth'))
    with pytest.raises(TicketError, match='does not exist'):
        load_ticket(str(tmp_path / 'missing.pth'))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ('touch pwned',))


def test_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({'meta': {'format': 'mmrecprune-ticket'}, 'x': _RunsCode()}, 'evil.pth')
    with pytest.raises(TicketError, match='nothing in it was executed'):
        load_ticket('evil.pth')
    assert not (tmp_path / 'pwned').exists()


def test_edited_mask_is_refused(tmp_path):
    _unstructured_ticket(tmp_path / 't.pth')
    payload = torch.load(tmp_path / 't.pth', weights_only=True)
    name = next(iter(payload['masks']))
    payload['masks'][name]['bits'][:] = 0  # prunes everything, but the weights are not zero
    torch.save(payload, tmp_path / 'edited.pth')
    with pytest.raises(TicketError, match='non-zero where its mask prunes it'):
        load_ticket(str(tmp_path / 'edited.pth'))


def test_failed_save_leaves_existing_ticket_intact(tmp_path):
    _unstructured_ticket(tmp_path / 't.pth')
    before = (tmp_path / 't.pth').read_bytes()
    with pytest.raises(TicketError):
        save_ticket(str(tmp_path / 't.pth'), dict(CFG, bad=object()), {})
    assert (tmp_path / 't.pth').read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['t.pth']


# -- format version 2: pruned entries with a fill value ------------------------------------------
def _filled_ticket(path):
    """A 50 % sparse ticket whose pruned entries hold their filter's mean pruned value."""
    torch.manual_seed(0)
    net = ResNet(depth=18, base_channels=8)
    params = prunable_parameters(net)
    masks = global_magnitude_masks(params, init_masks(params), 0.5)
    fills = {}
    with torch.no_grad():
        for n, p in params.items():
            pruned = (~masks[n]).float()
            mean = (p * pruned).sum((1, 2, 3), keepdim=True) / pruned.sum(
                (1, 2, 3), keepdim=True).clamp(min=1)
            fills[n] = mean
            p.copy_(torch.where(masks[n], p, mean))
    save_ticket(str(path), CFG, net.state_dict(), masks=masks, fill_values=fills, method='test')
    return masks, fills


def test_version_1_ticket_loads_unchanged(tmp_path):
    net, masks = _unstructured_ticket(tmp_path / 'v2.pth')
    payload = torch.load(tmp_path / 'v2.pth', weights_only=True)
    payload['meta']['version'] = 1  # what every ticket written before format 2 looks like
    assert all('fill' not in entry for entry in payload['masks'].values())
    torch.save(payload, tmp_path / 'v1.pth')
    ticket = load_ticket(str(tmp_path / 'v1.pth'))
    assert ticket.fill_values == {} and ticket.meta['version'] == 1
    assert all(torch.equal(ticket.masks[n], m) for n, m in masks.items())
    backbone = build_backbone_from_ticket(str(tmp_path / 'v1.pth'))
    for name, p in backbone.named_parameters():
        if name in masks:
            assert not p[~masks[name]].any()


def test_fill_values_round_trip_and_stay_through_training_with_weight_decay(tmp_path):
    masks, fills = _filled_ticket(tmp_path / 'filled.pth')
    ticket = load_ticket(str(tmp_path / 'filled.pth'))
    assert ticket.meta['version'] == 2 and set(ticket.fill_values) == set(fills)
    backbone = build_backbone_from_ticket(str(tmp_path / 'filled.pth'), out_indices=(3, ))
    params = dict(backbone.named_parameters())
    before = {n: params[n].detach().clone() for n in masks}
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        backbone(torch.rand(2, 3, 32, 32))[-1].square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    backbone(torch.rand(2, 3, 32, 32))  # the forward puts the fill values back first
    for n, m in masks.items():
        expected = torch.broadcast_to(fills[n], m.shape)[~m]
        assert torch.equal(params[n].detach()[~m], expected), n
    assert any(not torch.equal(params[n].detach()[m], before[n][m]) for n, m in masks.items())


def test_fill_values_that_do_not_fit_are_refused(tmp_path):
    masks, fills = _filled_ticket(tmp_path / 'filled.pth')
    payload = torch.load(tmp_path / 'filled.pth', weights_only=True)
    name = next(iter(payload['masks']))
    payload['masks'][name]['fill'] = payload['masks'][name]['fill'] + 1.0
    torch.save(payload, tmp_path / 'edited.pth')
    with pytest.raises(TicketError, match='differs from its fill value'):
        load_ticket(str(tmp_path / 'edited.pth'))
    payload['masks'][name]['fill'] = torch.zeros(3, 1, 1, 1, 1)
    torch.save(payload, tmp_path / 'shape.pth')
    with pytest.raises(TicketError, match='broadcast'):
        load_ticket(str(tmp_path / 'shape.pth'))
    net = ResNet(depth=18, base_channels=8)
    with pytest.raises(TicketError, match='has no mask'):
        save_ticket(str(tmp_path / 'x.pth'), CFG, net.state_dict(), masks=masks,
                    fill_values={'nope.weight': torch.zeros(())})


def test_identical_tickets_are_identical_files(tmp_path):
    """A rebuilt ticket can be checked against a published sha256: the same content gives the
    same bytes whatever the file is called (torch.save used to record the temporary name)."""
    import hashlib

    from tests.conftest import UNSTRUCTURED_60, export_test_ticket
    cfg = dict(type='mmdet.ResNet', depth=18, base_channels=4, out_indices=[3])
    digests = {hashlib.sha256(open(export_test_ticket(tmp_path / name, cfg, UNSTRUCTURED_60),
                                   'rb').read()).hexdigest()
               for name in ('a.pth', 'round_7.pth')}
    assert len(digests) == 1


def test_written_files_get_the_permissions_of_a_new_file(tmp_path):
    """Tickets and slim models are written through a temporary file (owner-only), but end with
    a new file's permissions (0o666 less the umask), so a team can read them."""
    import os

    from mmrecprune.tickets import write_atomically
    path = tmp_path / 'ticket.pth'
    write_atomically(str(path), b'data')
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert path.read_bytes() == b'data'
