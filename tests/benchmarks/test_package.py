"""The benchmark library is imported where it is used: ``import mmrecprune`` does not load it,
and no tool reaches another one through ``sys.path``."""
import glob
import os.path as osp
import subprocess
import sys

from tests.conftest import REPO


def test_mmrecprune_does_not_import_the_benchmarks():
    code = ('import sys, mmrecprune, mmrecprune.sparsity, mmrecprune.analysis; '
            'print(sorted(m for m in sys.modules if m.startswith("mmrecprune.benchmarks")))')
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == '[]'


def test_no_tool_or_test_edits_sys_path():
    files = glob.glob(osp.join(REPO, 'tools', '**', '*.py'), recursive=True)
    files += glob.glob(osp.join(REPO, 'tests', '**', '*.py'), recursive=True)
    files += glob.glob(osp.join(REPO, 'mmrecprune', '**', '*.py'), recursive=True)
    needle = 'sys.path.' + 'insert'  # not this file itself
    found = [osp.relpath(f, REPO) for f in files if needle in open(f).read()]
    assert not found, f'{found}: import from the package (mmrecprune.benchmarks, ...) instead'
