"""ONNX export of tickets' backbones and of detectors / segmentors trained on them, checked
against PyTorch with onnxruntime (mmrecprune.analysis and tools/deployment/pytorch2onnx.py)."""
import subprocess
import sys

import pytest
import torch
from torch import nn

from mmrecprune.analysis import export_onnx, max_abs_difference
from mmrecprune.registry import MODELS
from tests.conftest import REPO, STRUCTURED_50, UNSTRUCTURED_60, export_test_ticket

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')
SHAPE = (1, 3, 64, 64)


@pytest.fixture(scope='module')
def tickets(tmp_path_factory):
    folder = tmp_path_factory.mktemp('tickets')
    cfg = dict(type='mmdet.ResNet', depth=18, base_channels=16, out_indices=[3])
    return dict(unstructured=export_test_ticket(folder / 'u.pth', cfg, UNSTRUCTURED_60),
                structured=export_test_ticket(folder / 's.pth', cfg, STRUCTURED_50))


@pytest.mark.parametrize('kind', ['unstructured', 'structured'])
def test_ticket_backbone_exports_and_matches_pytorch(tmp_path, tickets, kind):
    backbone = MODELS.build(dict(type='mmrecprune.PrunedBackbone', ticket=tickets[kind],
                                 out_indices=(0, 1, 2, 3)))
    backbone.eval()
    wrapped = export_onnx(backbone, SHAPE, str(tmp_path / 'b.onnx'))
    worst, diffs = max_abs_difference(wrapped, str(tmp_path / 'b.onnx'), SHAPE)
    assert len(diffs) == 4 and worst < 1e-4


@pytest.mark.parametrize('config, outputs', [
    ('configs/downstream/mmdet/retinanet_r18-w16-slim_fpn_12e_fashionscenes.py', 8),
    ('configs/downstream/mmseg/fpn_r18-w16-slim_1k_fashionscenes.py', 1),
])
def test_tool_exports_a_detector_and_a_segmentor_on_a_slim_ticket(tmp_path, tickets, config,
                                                                   outputs):
    out = tmp_path / 'model.onnx'
    result = subprocess.run(
        [sys.executable, 'tools/deployment/pytorch2onnx.py', config, '--shape', '1', '3', '64',
         '64', '--out', str(out), '--cfg-options', f'model.backbone.ticket={tickets["structured"]}'],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    line = result.stdout.strip().splitlines()[-1]
    assert f'{outputs} outputs; max |onnxruntime - PyTorch| =' in line
    assert float(line.split('= ')[1].split()[0]) < 1e-3


class _NotExportable(nn.Module):
    def forward(self, x):
        return x.sum().item()  # a Python number: no tensor to export


def test_a_model_the_exporter_cannot_handle_gets_a_clear_error_and_nothing_is_overwritten(
        tmp_path):
    out = tmp_path / 'model.onnx'
    out.write_bytes(b'an earlier export')
    with pytest.raises(RuntimeError, match=r'cannot export _NotExportable to ONNX: .*was not '
                                           'written'):
        export_onnx(_NotExportable(), SHAPE, str(out))
    assert out.read_bytes() == b'an earlier export'
    assert [p.name for p in tmp_path.iterdir()] == ['model.onnx']
