"""The README's quickstart runs as written: its bash block is taken from README.md and run
unchanged by bash (prune a ResNet with PSAP, the ticket in the RetinaNet config, train, test,
export to ONNX). The block shrinks itself (``$S``: a few images per run); the only thing this
test adds is where it runs: a temporary folder holding links to the repository's ``configs``,
``tools`` and ``mmrecprune``, so its ``work_dirs/``, ``data/`` and ``retinanet.onnx`` land
there and not in the checkout."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

def quickstart_blocks():
    text = open(osp.join(REPO, 'README.md')).read()
    section = text.split('\n## Quickstart\n', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```bash\n(.*?)```', section, re.S)


def test_quickstart_has_one_short_block():
    blocks = quickstart_blocks()
    assert len(blocks) == 1
    lines = [line for line in blocks[0].replace('\\\n', ' ').splitlines() if line.strip()]
    assert len(lines) <= 10, lines
    for step in ('tools/train.py', 'tools/test.py', 'tools/deployment/pytorch2onnx.py'):
        assert step in blocks[0], step


def test_quickstart_runs_verbatim(tmp_path):
    for name in ('configs', 'tools', 'mmrecprune'):
        os.symlink(osp.join(REPO, name), tmp_path / name)
    env = dict(os.environ, PATH=osp.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
    result = subprocess.run(['bash', '-e', '-c', quickstart_blocks()[0]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1200)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert (tmp_path / 'work_dirs/psap_r18-w16_1xb128-4e_fashionmnist/tickets/slim.pth').is_file()
    assert (tmp_path / 'retinanet.onnx').is_file()
    assert 'max |onnxruntime - PyTorch| =' in out
