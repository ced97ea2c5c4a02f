"""docs/en/advanced_guides/add_a_criterion.md works as written: its Python blocks are run.

A block whose first line is ``# <path>.py`` is a file of the reader's project and is written
there (``configs/`` is a copy of the repository's, so a config block sits next to the configs it
inherits); the other blocks run in order in one namespace, in that project folder.
"""
import os.path as osp
import re
import shutil
import sys

import pytest

from mmrecprune.registry import CRITERIA
from tests.conftest import REPO

GUIDE = osp.join(REPO, 'docs', 'en', 'advanced_guides', 'add_a_criterion.md')
FILE_HEADER = re.compile(r'#\s*([\w./-]+\.py)\s*\n')


def guide_blocks():
    """``[(path or None, code)]`` of the guide's Python blocks, in order."""
    blocks = re.findall(r'```python\n(.*?)```', open(GUIDE).read(), re.S)
    out = []
    for code in blocks:
        header = FILE_HEADER.match(code)
        out.append((header[1] if header else None, code))
    return out


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copytree(osp.join(REPO, 'configs'), tmp_path / 'configs')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(CRITERIA.module_dict)
    yield tmp_path
    for name in set(CRITERIA.module_dict) - before:  # the guide's criteria
        CRITERIA.module_dict.pop(name)
    for module in [m for m in sys.modules if m == 'my_project' or m.startswith('my_project.')]:
        del sys.modules[module]


def test_the_guide_has_files_and_scripts():
    blocks = guide_blocks()
    assert 'my_project/criteria.py' in [p for p, _ in blocks]
    assert any(p and p.startswith('configs/') for p, _ in blocks)
    assert sum(p is None for p, _ in blocks) >= 3


def test_the_guide_runs(project, capsys):
    namespace = {'__name__': 'add_a_criterion_guide'}
    for path, code in guide_blocks():
        if path is not None:
            target = project / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code)
        else:
            exec(compile(code, GUIDE, 'exec'), namespace)
    # the guide's own criteria were registered and used
    assert {'LAMP', 'FisherSaliency', 'BNShiftAndScale'} <= set(CRITERIA.module_dict)
    assert 'not elements' in capsys.readouterr().out
