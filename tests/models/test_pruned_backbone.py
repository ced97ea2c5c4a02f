"""``mmrecprune.PrunedBackbone`` with the options users' configs really set, and the inputs
users really give it."""
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmrecprune.models.pruned_backbone import build_backbone_from_ticket
from mmrecprune.registry import MODELS
from mmrecprune.tickets import Ticket, TicketError, load_ticket
from tests.conftest import repo_path

pytestmark = pytest.mark.usefixtures('single_thread')


def build(ticket, **options):
    return MODELS.build(dict(type='mmrecprune.PrunedBackbone', ticket=ticket, **options))


def _frozen_prefixes(frozen_stages):
    prefixes = ['conv1.', 'bn1.'] if frozen_stages >= 0 else []
    return tuple(prefixes + [f'layer{i}.' for i in range(1, frozen_stages + 1)])


@pytest.mark.parametrize('kind', ['unstructured', 'structured'])
@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 4])
@pytest.mark.parametrize('norm_eval', [False, True])
def test_frozen_stages_and_norm_eval(r18_tickets, kind, frozen_stages, norm_eval):
    ticket = load_ticket(r18_tickets[kind])
    backbone = build(r18_tickets[kind], out_indices=(0, 1, 2, 3), frozen_stages=frozen_stages,
                     norm_eval=norm_eval)
    backbone.init_weights()
    backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items() if torch.is_tensor(v)}
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1, momentum=0.9, weight_decay=0.01) \
        if trainable else None
    torch.manual_seed(0)
    for _ in range(2):
        loss = sum(out.square().mean() for out in backbone(torch.randn(2, 3, 32, 32)))
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = backbone.state_dict()
    frozen = _frozen_prefixes(frozen_stages)
    params = dict(backbone.named_parameters())
    for name, old in before.items():
        new = after[name]
        if name.startswith(frozen):
            assert torch.equal(old, new), f'{name} changed in a frozen stage'
        elif name in params:
            assert not torch.equal(old, new), f'{name} did not train'
        elif name.endswith(('running_mean', 'running_var')):
            assert torch.equal(old, new) == norm_eval, f'{name} with norm_eval={norm_eval}'
    for name, mask in ticket.masks.items():
        assert not after[name][~mask].any(), f'{name}: a pruned entry came back'


def test_pretrained_and_init_cfg_are_ignored(r18_tickets):
    ticket = load_ticket(r18_tickets['structured'])
    backbone = build(r18_tickets['structured'], pretrained='open-mmlab://resnet50_v1c',
                     init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'))
    backbone.init_weights()
    for name, value in ticket.state_dict.items():
        assert torch.equal(backbone.state_dict()[name], value), name


@pytest.mark.parametrize('kind', ['unstructured', 'structured'])
def test_contract_dilation_builds_mmseg_resnet(r18_tickets, kind):
    from mmseg.models.backbones import ResNet as MMSegResNet
    backbone = build(r18_tickets[kind], out_indices=(0, 1, 2, 3), strides=(1, 2, 1, 1),
                     dilations=(1, 1, 2, 4), contract_dilation=True)
    assert isinstance(backbone, MMSegResNet)
    # BasicBlock dilates conv1; contracted: the first block of a dilated stage at half
    assert backbone.layer3[0].conv1.dilation == (1, 1)
    assert backbone.layer3[1].conv1.dilation == (2, 2)
    assert backbone.layer4[0].conv1.dilation == (2, 2)
    assert backbone.layer4[1].conv1.dilation == (4, 4)
    ticket = load_ticket(r18_tickets[kind])
    for name, value in ticket.state_dict.items():
        assert torch.equal(backbone.state_dict()[name], value), name
    outs = backbone(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 8, 8]  # output stride 8


def test_contract_dilation_refused_for_other_backbones():
    ticket = Ticket(meta=dict(kind='dense', backbone=dict(type='mmdet.MobileNetV2')),
                    state_dict={})
    with pytest.raises(TicketError, match='contract_dilation applies to ResNet'):
        build(ticket, contract_dilation=True)


@pytest.mark.parametrize('options, match', [
    (dict(ticket=None), 'needs `ticket`'),
    (dict(), 'needs `ticket`'),
    (dict(ticket=3), 'must be the path of a ticket file'),
    (dict(ticket='TICKET', depth=50), r"options \['depth'\]"),
])
def test_bad_options_get_ticket_errors(r18_tickets, options, match):
    options = {k: r18_tickets['structured'] if v == 'TICKET' else v for k, v in options.items()}
    with pytest.raises(TicketError, match=match):
        MODELS.build(dict(type='mmrecprune.PrunedBackbone', **options))


def test_directory_empty_file_and_training_checkpoint_are_refused(tmp_path,
                                                                   training_checkpoint):
    with pytest.raises(TicketError, match='is a directory'):
        build(str(tmp_path))
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(TicketError, match='is empty'):
        build(str(empty))
    with pytest.raises(TicketError, match='is a training checkpoint, not a ticket'):
        build(training_checkpoint)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a zip file at all')
    with pytest.raises(TicketError, match='truncated or corrupted'):
        build(str(garbage))


def test_missing_file_fails_at_first_use_with_the_path(tmp_path):
    path = str(tmp_path / 'moved' / 'round_7.pth')
    backbone = build(path, out_indices=(0, 1, 2, 3))
    with pytest.raises(TicketError, match='round_7.pth.*does not exist'):
        backbone(torch.randn(1, 3, 32, 32))
    with pytest.raises(TicketError, match='does not exist'):
        backbone.init_weights()


def _built(config, ticket, **cfg_options):
    cfg = Config.fromfile(repo_path(config))
    cfg.model.backbone.ticket = ticket
    cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


def test_neck_width_mismatch_is_named_at_first_forward(r18_tickets):
    """A base_channels=8 ticket in the w16 RetinaNet (neck in_channels [16, 32, 64, 128])."""
    model = _built('configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py',
                   r18_tickets['structured'])
    with pytest.raises(TicketError, match=r'outputs \[8, 16, 32, 64\].*FPN.*in_channels '
                                          r'\[16, 32, 64, 128\]'):
        model.extract_feat(torch.randn(1, 3, 64, 64))


def test_decode_head_width_mismatch_is_named_at_first_forward(r18_tickets):
    model = _built('configs/downstream/mmseg/fcn_r18-w16-ticket-d8_1k_fashionscenes.py',
                   r18_tickets['unstructured'])
    feats = model.extract_feat(torch.randn(1, 3, 64, 64))
    with pytest.raises(TicketError, match=r'outputs \[8, 16, 32, 64\].*in_channels 128'):
        model.decode_head(feats)


def test_matching_widths_run_and_check_only_once(r18_tickets):
    model = _built('configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py',
                   r18_tickets['structured'], model=dict(neck=dict(in_channels=[8, 16, 32, 64])))
    hooks = len(torch.nn.modules.module._global_forward_pre_hooks)
    model.extract_feat(torch.randn(1, 3, 64, 64))
    model.extract_feat(torch.randn(1, 3, 64, 64))
    assert len(torch.nn.modules.module._global_forward_pre_hooks) == hooks


def test_ticket_file_is_not_reopened_after_build(tmp_path, r18_tickets):
    """The built backbone holds everything it needs."""
    path = tmp_path / 'copy.pth'
    path.write_bytes(open(r18_tickets['unstructured'], 'rb').read())
    backbone = build(str(path), out_indices=(3, ))
    backbone.eval()  # mmdet's ResNet.train() returns None: no chaining
    os.remove(path)
    assert backbone(torch.randn(1, 3, 32, 32))[0].shape[1] == 64


def test_deep_copy_checks_nothing_after_the_first_forward(r18_tickets):
    """Deployment and EMA deep-copy the backbone: the copy carries no armed hooks."""
    import copy
    backbone = build(r18_tickets['structured'], out_indices=(0, 1, 2, 3))
    backbone.eval()
    backbone(torch.randn(1, 3, 32, 32))  # arms the check (no consumer follows here)
    backbone(torch.randn(1, 3, 32, 32))  # disarms it, arms nothing
    hooks = len(torch.nn.modules.module._global_forward_pre_hooks)
    clone = copy.deepcopy(backbone)
    clone(torch.randn(1, 3, 32, 32))
    assert not clone._consumer_width_check
    assert len(torch.nn.modules.module._global_forward_pre_hooks) == hooks


@pytest.mark.parametrize('kind', ['unstructured', 'structured'])
def test_state_dict_holds_tensors_only_and_reads_old_dict_headers(r18_tickets, kind):
    """The ticket header is a uint8 tensor entry; a checkpoint of mmrecprune 0.1, whose entry
    was the header dict itself, still loads (checked against the same schema)."""
    from mmrecprune.models.pruned_backbone import read_header
    backbone = build_backbone_from_ticket(ticket=r18_tickets[kind], out_indices=(3, ))
    state = backbone.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state['ticket'].dtype == torch.uint8
    header = read_header(state['ticket'], '')
    other = build_backbone_from_ticket(ticket=r18_tickets[kind], out_indices=(3, ))
    other.load_state_dict(dict(state, ticket=header))
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, other.state_dict()[name]), name
