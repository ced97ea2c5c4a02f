"""What the guide-following tests share: a guide's Python blocks, and a reader's project folder.

A block whose first line is ``# <path>.py`` is a file of the reader's project; the other blocks
run in order in one namespace, in that folder. The folder holds a copy of the repository's
``configs/`` (a config block sits next to the configs it inherits), is the working directory and
is first on ``sys.path``; what the guide registers and the ``my_project`` modules it imports are
removed afterwards.
"""
import os.path as osp
import re
import shutil
import sys
from contextlib import contextmanager

from tests.conftest import REPO

FILE_HEADER = re.compile(r'#\s*([\w./-]+\.py)\s*\n')


def guide_path(name):
    return osp.join(REPO, 'docs', 'en', 'advanced_guides', name)


def guide_blocks(guide):
    """``[(path or None, code)]`` of the guide's Python blocks, in order."""
    out = []
    for code in re.findall(r'```python\n(.*?)```', open(guide).read(), re.S):
        header = FILE_HEADER.match(code)
        out.append((header[1] if header else None, code))
    return out


@contextmanager
def reader_project(tmp_path, monkeypatch, registry):
    """The reader's project folder; names the guide adds to ``registry`` go afterwards."""
    shutil.copytree(osp.join(REPO, 'configs'), tmp_path / 'configs')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(registry.module_dict)
    try:
        yield tmp_path
    finally:
        for name in set(registry.module_dict) - before:
            registry.module_dict.pop(name)
        for module in [m for m in sys.modules
                       if m == 'my_project' or m.startswith('my_project.')]:
            del sys.modules[module]
