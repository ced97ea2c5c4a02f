"""Tickets drop into the configs shipped inside the installed mmdet and mmseg packages, with
only ``model.backbone`` replaced (their defaults: ``frozen_stages=1``, mmseg's model-level
``pretrained``, SyncBN, dilated V1c layouts), and the snippets of
docs/en/user_guides/use_a_ticket.md work verbatim.

The tickets are standard-width ResNet-50s made by the pruning hooks in tiny real runs. Each
model is built, initialised, and takes one loss / backward / SGD step on a synthetic 64x64
sample (the only change a test makes besides the ticket path: mmseg's crop size, so a
512x512 pad does not dominate the run time).
"""
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

from mmrecprune.registry import MODELS
from mmrecprune.tickets import load_ticket
from tests.conftest import repo_path

pytestmark = pytest.mark.usefixtures('single_thread')

DET_BACKBONE = ("dict(_delete_=True, type='mmrecprune.PrunedBackbone', ticket={ticket!r}, "
                "out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True)")
SEG_DILATED_BACKBONE = (
    "dict(_delete_=True, type='mmrecprune.PrunedBackbone', ticket={ticket!r}, "
    "out_indices=(0, 1, 2, 3), strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), "
    "contract_dilation=True, norm_eval=False)")
SEG_BACKBONE = ("dict(_delete_=True, type='mmrecprune.PrunedBackbone', ticket={ticket!r}, "
                "out_indices=(0, 1, 2, 3), norm_eval=False)")
SHIPPED = {
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py': DET_BACKBONE,
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py': DET_BACKBONE,
    'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py': SEG_DILATED_BACKBONE,
    'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py': SEG_BACKBONE,
}


def user_config(tmp_path, base, backbone, ticket):
    path = tmp_path / (re.sub(r'\W', '_', base) + '.py')
    path.write_text(f"_base_ = {base!r}\n"
                    "custom_imports = dict(imports=['mmrecprune'], allow_failed_imports=False)\n"
                    f"model = dict(backbone={backbone.format(ticket=ticket)})\n")
    return str(path)


def synthetic_batch(model, cfg):
    if cfg.default_scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        with_mask = 'mask_head' in cfg.model.get('roi_head', {})
        packed = demo_mm_inputs(1, [(3, 64, 64)], num_items=[2], num_classes=80,
                                with_mask=with_mask)
    else:
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        samples = []
        for _ in range(2):  # image-pooling heads (ASPP, PPM) need 2 samples to train BN
            sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                                 pad_shape=(64, 64)))
            sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 64)))
            samples.append(sample)
        packed = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
                              for _ in samples], data_samples=samples)
    return model.data_preprocessor(packed, True)


def build_and_step(config_path, ticket_path):
    """Build the user's config, check init, take one SGD step; return the model."""
    cfg = Config.fromfile(config_path)
    if cfg.default_scope == 'mmseg':
        cfg.model.data_preprocessor.size = (64, 64)
    init_default_scope(cfg.default_scope)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))  # SyncBN needs a process group
    model.init_weights()
    ticket = load_ticket(ticket_path)
    own = model.backbone.state_dict()
    for name, value in ticket.state_dict.items():
        assert torch.equal(own[name], value), f'init_weights() changed the ticket\'s {name}'
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01,
                                momentum=0.9, weight_decay=1e-4)
    losses = model(**synthetic_batch(model, cfg), mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    own = model.backbone.state_dict()
    for name, mask in ticket.masks.items():
        assert not own[name][~mask].any(), f'{name}: a pruned entry came back'
    trained = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trained
    if cfg.model.backbone.get('frozen_stages', -1) >= 1:  # mmdet's default: stem + stage 1
        assert not [n for n in trained if n.startswith(('conv1.', 'bn1.', 'layer1.'))]
    return model


@pytest.mark.parametrize('kind', ['unstructured', 'structured'])
@pytest.mark.parametrize('base', list(SHIPPED))
def test_ticket_in_shipped_config(tmp_path, r50_tickets, base, kind):
    config = user_config(tmp_path, base, SHIPPED[base], r50_tickets[kind])
    model = build_and_step(config, r50_tickets[kind])
    if 'deeplabv3' in base:
        assert model.backbone.layer4[0].conv2.dilation == (2, 2)  # contract_dilation applied


def test_nm_ticket_in_shipped_retinanet(tmp_path, r50_nm_ticket):
    """A 2:4 ticket (made by the IMP hook with pattern='2:4') in mmdet's shipped RetinaNet,
    only the backbone replaced: it builds, takes an SGD step with momentum and weight decay,
    pruned entries stay exactly zero and every group of 4 input channels keeps >= 2 zeros."""
    from mmrecprune.sparsity import nm_groups
    ticket = load_ticket(r50_nm_ticket)
    assert ticket.kind == 'nm' and ticket.meta['pattern'] == '2:4'
    assert ticket.meta['sparsity'] == 0.5
    base = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
    model = build_and_step(user_config(tmp_path, base, SHIPPED[base], r50_nm_ticket),
                           r50_nm_ticket)
    state = model.backbone.state_dict()
    trained = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert any(n in trained for n in ticket.masks)  # masked weights that trained
    for name in ticket.masks:
        groups, _ = nm_groups(state[name] == 0, 4)
        assert (groups.sum(dim=1) >= 2).all(), name


def guide_snippets():
    text = open(repo_path('docs', 'en', 'user_guides', 'use_a_ticket.md')).read()
    return re.findall(r'```python\n(.*?)```', text, re.S)


def test_guide_snippets_work_verbatim(tmp_path, r50_tickets):
    snippets = guide_snippets()
    assert len(snippets) == 2
    for i, snippet in enumerate(snippets):
        placeholder = re.search(r"ticket='([^']+)'", snippet).group(1)
        path = tmp_path / f'snippet_{i}.py'
        path.write_text(snippet.replace(placeholder, r50_tickets['unstructured']))
        build_and_step(str(path), r50_tickets['unstructured'])


@pytest.mark.parametrize('base', ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
                                  'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py'])
def test_filled_ticket_in_shipped_config(tmp_path, base):
    """An on-the-fly style R50 ticket (pruned entries hold non-zero mean values, format v2) in
    the installed packages' own configs, only the backbone replaced: init_weights leaves it
    alone, one SGD step with weight decay trains the kept entries and the fills stay."""
    from tests.conftest import ONE_SHOT_70_FILLED, assert_fills_kept, export_test_ticket
    path = export_test_ticket(tmp_path / 'onthefly.pth',
                              dict(type='mmdet.ResNet', depth=50, out_indices=[3]),
                              ONE_SHOT_70_FILLED)
    ticket = load_ticket(path)
    assert ticket.fill_values
    cfg = Config.fromfile(user_config(tmp_path, base, SHIPPED[base], path))
    if cfg.default_scope == 'mmseg':
        cfg.model.data_preprocessor.size = (64, 64)
    init_default_scope(cfg.default_scope)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01,
                                momentum=0.9, weight_decay=1e-4)
    loss, _ = model.parse_losses(model(**synthetic_batch(model, cfg), mode='loss'))
    loss.backward()
    optimizer.step()
    model(**synthetic_batch(model, cfg), mode='loss')  # the forward pre-hook restores fills
    assert_fills_kept(model, path)
