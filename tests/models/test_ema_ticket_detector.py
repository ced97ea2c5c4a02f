"""``EMAHook(update_buffers=True)`` (as mmdet's RTMDet / YOLOX configs use it) trains a ticket
detector: every state_dict entry of a ticket backbone is a tensor, the ticket header included,
so the averaged model clones and averages it like any buffer."""
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmrecprune.fileio import load_mmengine_checkpoint
from mmrecprune.tickets import load_ticket
from tests.conftest import repo_path, shrink_downstream_cfg

pytestmark = pytest.mark.usefixtures('single_thread')
DET_CFG = 'configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py'


def test_ema_update_buffers_on_shipped_retinanet(tmp_path, scenes, r50_tickets):
    ticket_path = r50_tickets['unstructured']
    cfg = Config.fromfile(repo_path(DET_CFG))
    # the model of mmdet's own RetinaNet R50 config, only the backbone replaced
    shipped = tmp_path / 'shipped.py'
    shipped.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n")
    cfg.model = Config.fromfile(str(shipped)).model
    cfg.model.backbone = dict(type='mmrecprune.PrunedBackbone', ticket=ticket_path,
                              out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True)
    cfg.model.bbox_head.num_classes = 10
    cfg.custom_hooks = [dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.5,
                             update_buffers=True, priority=49)]
    cfg = shrink_downstream_cfg(cfg, tmp_path, scenes, ticket_path)
    cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = 1
    Runner.from_cfg(cfg).train()

    ckpt = load_mmengine_checkpoint(str(tmp_path / 'epoch_1.pth'))
    ema, model = ckpt['ema_state_dict'], ckpt['state_dict']
    assert all(isinstance(v, torch.Tensor) for v in ema.values())
    header = ema['module.backbone.ticket']
    assert header.dtype == torch.uint8 and torch.equal(header, model['backbone.ticket'])
    ticket = load_ticket(ticket_path)
    averaged = 0
    for name, mask in ticket.masks.items():
        assert not ema[f'module.backbone.{name}'][~mask].any()  # pruned entries stay zero
        averaged += int((ema[f'module.backbone.{name}'] != model[f'backbone.{name}']).sum())
    assert averaged > 0  # the EMA weights are an average, not a copy
