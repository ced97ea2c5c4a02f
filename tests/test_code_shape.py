"""The shape of the code (issue 21): no module in the package or the tools grows past
:data:`MAX_LINES` lines (split it along its seams instead), and nothing edits ``sys.path`` to
import (the package is installed; tools and tests import it as it is)."""
import glob
import os.path as osp
import re

from tests.conftest import REPO

#: the most lines a ``.py`` file under mmrecprune/ or tools/ may have
MAX_LINES = 420
#: ``sys.path.insert(...)`` / ``sys.path.append(...)``, however spaced
SYS_PATH_EDIT = re.compile(r'\bsys\s*\.\s*path\s*\.\s*(insert|append)\s*\(')


def _python_files(*folders):
    """The ``.py`` files under ``folders`` (relative to the repository), symlinks left out
    (``mmrecprune/.mim/tools`` links back to ``tools/``)."""
    paths = []
    for folder in folders:
        for path in glob.glob(osp.join(REPO, folder, '**', '*.py'), recursive=True):
            if not osp.islink(path) and '.mim' not in path.split(osp.sep):
                paths.append(path)
    return sorted(paths)


def _line_count(path):
    with open(path, encoding='utf-8') as f:
        return sum(1 for _ in f)


def test_the_files_are_found():
    """The checks below see the package, the tools and the tests (and this file)."""
    found = {osp.relpath(p, REPO) for p in _python_files('mmrecprune', 'tools', 'tests')}
    assert {'mmrecprune/__init__.py', 'tools/train.py', 'tests/test_code_shape.py'} <= found


def test_no_module_over_max_lines():
    too_long = {osp.relpath(p, REPO): n for p in _python_files('mmrecprune', 'tools')
                if (n := _line_count(p)) > MAX_LINES}
    assert not too_long, (f'files over {MAX_LINES} lines (split them along their seams): '
                          f'{too_long}')


def test_nothing_edits_sys_path():
    editing = [osp.relpath(p, REPO) for p in _python_files('mmrecprune', 'tools', 'tests')
               if osp.abspath(p) != osp.abspath(__file__)
               and SYS_PATH_EDIT.search(open(p, encoding='utf-8').read())]
    assert not editing, f'files that edit sys.path to import: {editing}'


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The pattern and the line count catch a file of each kind (so a passing run means
    something)."""
    assert SYS_PATH_EDIT.search('import sys\nsys.path.insert(0, ROOT)\n')
    assert SYS_PATH_EDIT.search('sys.path .append (here)')
    assert not SYS_PATH_EDIT.search('print(sys.path)\nos.path.join(a, b)\n')
    long_file = tmp_path / 'long.py'
    long_file.write_text('x = 1\n' * (MAX_LINES + 1))
    assert _line_count(str(long_file)) == MAX_LINES + 1
