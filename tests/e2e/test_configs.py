"""Every shipped config parses and its model builds and runs one forward pass."""
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmrecprune.registry import MODELS

CONFIGS = sorted(p for p in glob.glob('configs/**/*.py', recursive=True)
                 if '/_base_/' not in p)


def _build(cfg, path, request):
    """Build the config's model; a ticket config gets a real ticket of its depth and kind."""
    if 'PrunedBackbone' in str(cfg.model.backbone.get('type', '')) and 'mobilenetv2' in path:
        cfg.model.backbone.ticket = request.getfixturevalue('mbv2_ticket')
    elif 'PrunedBackbone' in str(cfg.model.backbone.get('type', '')):
        tickets = request.getfixturevalue('r50_tickets' if '_r50' in path else 'r18_w16_tickets')
        cfg.model.backbone.ticket = tickets['structured' if '-slim' in path else 'unstructured']
    cfg.model.backbone.pop('init_cfg', None)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds_and_runs(path, request):
    cfg = Config.fromfile(path)
    model = _build(cfg, path, request)
    model.eval()
    size = 64
    x = torch.rand(1, 3, size, size) * 255
    with torch.no_grad():
        if cfg.default_scope == 'mmdet' and 'roi_head' in cfg.model:
            # a two-stage detector's forward needs data samples (image metas for the RPN)
            from mmdet.testing import demo_mm_inputs
            data = model.data_preprocessor(demo_mm_inputs(1, [(3, size, size)]), False)
            out = model(**data, mode='predict')
            assert len(out) == 1 and 'bboxes' in out[0].pred_instances
        elif cfg.default_scope == 'mmdet':
            out = model(model.data_preprocessor(dict(inputs=[x[0]]))['inputs'], mode='tensor')
            assert len(out) == 2  # cls scores, bbox preds
        elif cfg.default_scope == 'mmseg':
            out = model(x, mode='tensor')
            assert out.shape[1] == cfg.model.decode_head.num_classes
        else:
            out = model(x, mode='tensor')
            # RotNet's head predicts the 4 rotations
            classes = 4 if 'RotNet' in cfg.model.type else cfg.model.num_classes
            assert out.shape == (1, classes)


@pytest.mark.parametrize('path', CONFIGS)
def test_auto_scale_lr_names_the_batch_the_lr_was_set_for(path):
    """``--auto-scale-lr`` works with every config, and its base batch is the config's total
    batch: GPUs x images in the name (``8xb32``: 256), else one process's batch."""
    cfg = Config.fromfile(path)
    base = cfg.get('auto_scale_lr', {}).get('base_batch_size')
    assert isinstance(base, int), f'{path}: no auto_scale_lr.base_batch_size'
    gpus_x_batch = re.search(r'(\d+)xb(\d+)', osp.basename(path))
    if gpus_x_batch:
        assert base == int(gpus_x_batch[1]) * int(gpus_x_batch[2]), (path, base)
    else:
        assert base % cfg.train_dataloader.batch_size == 0, (path, base)
