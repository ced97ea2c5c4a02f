"""The config a slim task model is written with (mmrecprune.models.slim_task_model), on the
model configs shipped inside mmdet / mmseg: which keys change, which stay. Configs only, no
model is built (the end-to-end runs are tests/e2e/test_intask_pruning.py)."""
import pytest
from mmengine.config import Config

from mmrecprune.models.slim_task_model import set_consumer_in_channels, task_config
from tests.conftest import repo_path

WIDTHS = [40, 96, 200, 480]


def _intask(name):
    return Config.fromfile(repo_path('configs', 'intask', name))


def test_task_config_builds_the_ticket_backbone_without_the_pruning_hooks():
    cfg = _intask('psap_mask-rcnn_r50_fpn_1x_coco.py')
    cfg.custom_hooks.append(dict(type='EMAHook'))
    written = task_config(cfg, 'work_dirs/run/tickets/slim.pth')
    backbone = written.model.backbone
    assert backbone.type == 'mmrecprune.PrunedBackbone'
    assert backbone.ticket == 'work_dirs/run/tickets/slim.pth'
    # behaviour from the run's backbone, structure (depth, widths) from the ticket
    assert backbone.frozen_stages == 1 and backbone.norm_eval is True
    assert list(backbone.out_indices) == [0, 1, 2, 3]
    assert 'depth' not in backbone and 'init_cfg' not in backbone
    assert [h['type'] for h in written.custom_hooks] == ['EMAHook']
    assert written.load_from is None and written.resume is False
    assert 'mmrecprune' in written.custom_imports['imports']
    assert written.model.neck.in_channels == [256, 512, 1024, 2048]  # widths=None: unchanged
    assert cfg.model.backbone.type == 'ResNet'  # the run's config is left alone


def test_slim_widths_go_to_the_neck():
    written = task_config(_intask('l1-global_retinanet_r50_fpn_1x_coco.py'), 't.pth', WIDTHS)
    assert written.model.neck.in_channels == WIDTHS
    assert written.model.bbox_head.in_channels == 256  # reads the neck, not the backbone


def test_slim_widths_go_to_each_head_by_its_in_index_without_a_neck():
    written = task_config(_intask('psap_deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py'), 't.pth',
                          WIDTHS)
    assert written.model.decode_head.in_channels == WIDTHS[3]  # in_index=3
    assert written.model.auxiliary_head.in_channels == WIDTHS[2]  # in_index=2
    assert written.model.pretrained is None
    assert written.model.backbone.contract_dilation is True  # the dilated layout kept
    assert list(written.model.backbone.dilations) == [1, 1, 2, 4]


@pytest.mark.parametrize('head,expected', [
    (dict(in_channels=2048), WIDTHS[-1]),  # mmseg's default in_index: -1
    (dict(in_channels=[1, 2], in_index=[0, 3]), [WIDTHS[0], WIDTHS[3]]),
    (dict(num_classes=3), None)])  # no in_channels: left alone
def test_head_in_channels_follow_in_index(head, expected):
    model = dict(decode_head=dict(head), auxiliary_head=[dict(head), dict(head)])
    set_consumer_in_channels(model, WIDTHS)
    for out in [model['decode_head'], *model['auxiliary_head']]:
        assert out.get('in_channels') == expected
