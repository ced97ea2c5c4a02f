"""A detector / segmentor trained on a ticket loads from its own checkpoint through the mmdet
and mmseg inference APIs and tools/test.py after the ticket file is gone (shipped to another
machine), on a real photograph."""
import copy
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib import cbook

from mmrecprune.fileio import load_mmengine_checkpoint
from mmrecprune.models.pruned_backbone import read_header
from mmrecprune.tickets import TicketError
from tests.conftest import REPO, train_downstream

pytestmark = pytest.mark.usefixtures('single_thread')

DET_CFG = 'configs/downstream/mmdet/retinanet_r18-w16-ticket_fpn_12e_fashionscenes.py'
SEG_CFG = 'configs/downstream/mmseg/fpn_r18-w16-ticket_1k_fashionscenes.py'


@pytest.fixture(scope='module')
def photo():
    """Grace Hopper's portrait from matplotlib's sample data (a real photograph), as BGR."""
    from PIL import Image
    with cbook.get_sample_data('grace_hopper.jpg') as f:
        rgb = np.asarray(Image.open(f).convert('RGB').resize((128, 160)))
    return np.ascontiguousarray(rgb[..., ::-1])


def _trained(tmp_path, scenes, ticket_src, config, length):
    ticket = tmp_path / 'tickets' / 'ticket.pth'
    ticket.parent.mkdir()
    shutil.copy(ticket_src, ticket)
    runner = train_downstream(config, tmp_path / 'work', scenes, str(ticket), length,
                              base_channels=8)
    name = 'epoch_1.pth' if 'max_epochs' in runner.cfg.train_cfg else f'iter_{length}.pth'
    return runner.cfg, str(tmp_path / 'work' / name), ticket


def _det_scores(model, photo):
    from mmdet.apis import inference_detector
    result = inference_detector(model, photo)
    return result.pred_instances.scores, result.pred_instances.bboxes


@pytest.mark.parametrize('kind', ['unstructured', 'structured'])
def test_detector_loads_without_ticket_file(tmp_path, scenes, r18_tickets, photo, kind):
    from mmdet.apis import DetInferencer, init_detector
    cfg, ckpt, ticket = _trained(tmp_path, scenes, r18_tickets[kind], DET_CFG, 1)
    cfg.model.test_cfg.score_thr = 0.0  # an untrained detector: compare every box it makes
    # inference_detector edits the model's config in place: every API call gets its own copy
    with_ticket = _det_scores(init_detector(copy.deepcopy(cfg), ckpt, device='cpu'), photo)
    os.remove(ticket)
    model = init_detector(copy.deepcopy(cfg), ckpt, device='cpu')
    without = _det_scores(model, photo)
    assert len(with_ticket[0]) > 0
    for a, b in zip(with_ticket, without):
        torch.testing.assert_close(a, b)
    state = load_mmengine_checkpoint(ckpt)['state_dict']
    for name, value in model.backbone.state_dict().items():
        if torch.is_tensor(value):
            assert torch.equal(value, state['backbone.' + name]), name
    if kind == 'unstructured':
        assert read_header(model.backbone.state_dict()['ticket'], '')['masks']  # masks travelled
    inferencer = DetInferencer(model=cfg, weights=ckpt, device='cpu', show_progress=False)
    assert len(inferencer(photo)['predictions'][0]['scores']) == len(without[0])


def test_tools_test_runs_without_ticket_file(tmp_path, scenes, r18_tickets):
    cfg, ckpt, ticket = _trained(tmp_path, scenes, r18_tickets['structured'], DET_CFG, 1)
    config = tmp_path / 'trained_config.py'
    cfg.model.test_cfg.score_thr = 0.0  # a barely trained detector: keep every box for COCO
    cfg.dump(str(config))
    os.remove(ticket)
    out = tmp_path / 'metrics.json'
    result = subprocess.run(
        [sys.executable, 'tools/test.py', str(config), ckpt, '--work-dir', str(tmp_path / 't'),
         '--out-json', str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'coco/bbox_mAP' in json.loads(out.read_text())


@pytest.mark.parametrize('kind', ['unstructured', 'structured'])
def test_segmentor_loads_without_ticket_file(tmp_path, scenes, r18_tickets, photo, kind):
    from mmseg.apis import inference_model, init_model
    cfg, ckpt, ticket = _trained(tmp_path, scenes, r18_tickets[kind], SEG_CFG, 2)
    before = inference_model(init_model(copy.deepcopy(cfg), ckpt, device='cpu'),
                             photo).seg_logits.data
    os.remove(ticket)
    after = inference_model(init_model(copy.deepcopy(cfg), ckpt, device='cpu'),
                            photo).seg_logits.data
    torch.testing.assert_close(before, after)


def test_checkpoint_without_ticket_and_no_file_says_what_is_missing(tmp_path, scenes,
                                                                    r18_tickets):
    """A checkpoint of a dense model cannot stand in for a missing ticket."""
    from mmdet.apis import init_detector
    cfg, ckpt, ticket = _trained(tmp_path, scenes, r18_tickets['structured'], DET_CFG, 1)
    state = load_mmengine_checkpoint(ckpt)
    del state['state_dict']['backbone.ticket']
    torch.save(state, tmp_path / 'no_header.pth')
    os.remove(ticket)
    with pytest.raises(TicketError, match='does not exist and the checkpoint being loaded '
                                          'holds no ticket'):
        init_detector(cfg, str(tmp_path / 'no_header.pth'), device='cpu')


def test_checkpoint_of_another_ticket_is_refused(tmp_path, scenes, r18_tickets):
    """The config's ticket and the checkpoint's differ in widths: say so, not a shape error."""
    from mmdet.apis import init_detector
    cfg, ckpt, _ = _trained(tmp_path, scenes, r18_tickets['structured'], DET_CFG, 1)
    cfg.model.backbone.ticket = r18_tickets['unstructured']
    with pytest.raises(TicketError, match='trained on another ticket'):
        init_detector(cfg, ckpt, device='cpu')


def test_checkpoint_with_other_masks_warns(tmp_path, scenes, r18_tickets, capsys):
    """Same widths, other masks (another round of the same run): load, and say so."""
    from mmdet.apis import init_detector
    from mmengine.logging import MMLogger

    from mmrecprune.tickets import load_ticket, save_ticket
    cfg, ckpt, _ = _trained(tmp_path, scenes, r18_tickets['unstructured'], DET_CFG, 1)
    ticket = load_ticket(r18_tickets['unstructured'])
    name = next(iter(ticket.masks))
    masks = dict(ticket.masks, **{name: ticket.masks[name].clone()})
    masks[name].view(-1)[masks[name].view(-1).nonzero()[0]] = False  # one more weight pruned
    state = dict(ticket.state_dict)
    state[name] = state[name] * masks[name]
    other = save_ticket(str(tmp_path / 'other.pth'), ticket.backbone_cfg, state, masks=masks)
    cfg.model.backbone.ticket = other
    MMLogger.get_instance('mmengine', log_level='WARNING')
    model = init_detector(cfg, ckpt, device='cpu')
    assert 'trained with other masks' in capsys.readouterr().out
    weights = load_mmengine_checkpoint(ckpt)['state_dict']
    assert torch.equal(model.backbone.state_dict()[name], weights['backbone.' + name])
