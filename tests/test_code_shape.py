"""The shape of the code (issue 21): no module in the package or the tools grows past
:data:`MAX_LINES` lines (split it along its seams instead). That nothing edits ``sys.path``
is checked in tests/benchmarks/test_package.py."""
import glob
import os.path as osp

from tests.conftest import REPO

#: the most lines a ``.py`` file under mmrecprune/ or tools/ may have
MAX_LINES = 420


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

