"""docs/en/advanced_guides/add_a_criterion.md works as written: its Python blocks are run.

A block whose first line is ``# <path>.py`` is a file of the reader's project and is written
there (``configs/`` is a copy of the repository's, so a config block sits next to the configs it
inherits); the other blocks run in order in one namespace, in that project folder.
"""
import pytest

from mmrecprune.registry import CRITERIA
from tests.guide_project import guide_blocks, guide_path, reader_project

GUIDE = guide_path('add_a_criterion.md')


@pytest.fixture
def project(tmp_path, monkeypatch):
    with reader_project(tmp_path, monkeypatch, CRITERIA) as folder:
        yield folder


def test_the_guide_has_files_and_scripts():
    blocks = guide_blocks(GUIDE)
    assert 'my_project/criteria.py' in [p for p, _ in blocks]
    assert any(p and p.startswith('configs/') for p, _ in blocks)
    assert sum(p is None for p, _ in blocks) >= 3


def test_the_guide_runs(project, capsys):
    namespace = {'__name__': 'add_a_criterion_guide'}
    for path, code in guide_blocks(GUIDE):
        if path is not None:
            target = project / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code)
        else:
            exec(compile(code, GUIDE, 'exec'), namespace)
    # the guide's own criteria were registered and used
    assert {'LAMP', 'FisherSaliency', 'BNShiftAndScale'} <= set(CRITERIA.module_dict)
    assert 'not elements' in capsys.readouterr().out
