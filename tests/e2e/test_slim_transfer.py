"""A slim (structured) ticket trains inside the shipped mmdet / mmseg configs unchanged.

The ticket is ResNet-18 at the configs' own width (base_channels=16), so the configs are used as
shipped apart from the ticket path and the data / schedule shrinking every test needs.
"""
import re
import subprocess
import sys

import pytest
import torch

from mmrecprune.analysis import deployed, load_models
from mmrecprune.tickets import load_ticket
from tests.conftest import STRUCTURED_50, export_test_ticket, repo_path, train_downstream


@pytest.fixture(scope='module')
def slim_ticket(tmp_path_factory):
    return export_test_ticket(
        tmp_path_factory.mktemp('ticket') / 'slim.pth',
        dict(type='mmdet.ResNet', depth=18, base_channels=16, out_indices=[3]), STRUCTURED_50)


def _assert_slim_and_trained(model, ticket_path):
    ticket = load_ticket(ticket_path)
    state = model.backbone.state_dict()
    for name, sizes in ticket.channel_structure.items():
        assert state[name + '.weight'].shape[0] == sizes['out'], name
    moved = sum(int((state[n] != w).sum()) for n, w in ticket.state_dict.items()
                if w.is_floating_point())
    assert moved > 0


def test_detector_trains_on_slim_ticket(tmp_path, scenes, slim_ticket):
    runner = train_downstream(
        'configs/downstream/mmdet/retinanet_r18-w16-slim_fpn_12e_fashionscenes.py', tmp_path,
        scenes, slim_ticket, 1)
    _assert_slim_and_trained(runner.model, slim_ticket)


@pytest.mark.parametrize('config', ['fpn_r18-w16-slim_1k_fashionscenes.py',
                                    'fcn_r18-w16-slim-d8_1k_fashionscenes.py',
                                    'deeplabv3_r18-w16-slim-d8_1k_fashionscenes.py'])
def test_segmenter_trains_on_slim_ticket(tmp_path, scenes, slim_ticket, config):
    runner = train_downstream(f'configs/downstream/mmseg/{config}', tmp_path, scenes,
                              slim_ticket, 2)
    _assert_slim_and_trained(runner.model, slim_ticket)
    if config.startswith('deeplabv3'):
        assert type(runner.model.decode_head).__name__ == 'ASPPHead'


def test_deployed_slim_backbone_computes_what_the_eager_one_does(slim_ticket):
    _, slim, _ = load_models(slim_ticket)
    slim.eval()
    x = torch.randn(2, 3, 64, 64)
    fast = deployed(slim, tuple(x.shape))
    with torch.inference_mode():
        expected, got = slim(x), fast(x)
    assert [t.shape for t in got] == [t.shape for t in expected]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in slim.modules())  # a copy was fused


def test_analyze_ticket_reports_slim_speed_and_plots(tmp_path, slim_ticket):
    png = tmp_path / 'kept.png'
    out = subprocess.run(
        [sys.executable, repo_path('tools/analysis_tools/analyze_ticket.py'), slim_ticket,
         '--input-size', '64', '--batch-sizes', '1', '--repeats', '1', '--warmup', '0',
         '--threads', '1', '--deployed', '--out', str(png)],
        capture_output=True, text=True, cwd=repo_path(), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'structured ticket from psap' in out.stdout
    for mode in ('eager', 'deployed'):
        assert re.search(rf'latency batch 1 \({mode}\): dense .* speedup \d+\.\d\dx', out.stdout)
    assert png.stat().st_size > 0
