"""``python -m mmrecprune.ops`` as a user runs it: builds and checks the kernels, or says what is
missing and exits 1."""
import os
import subprocess
import sys

from mmrecprune.ops import mask_functions, onthefly_functions
from tests.conftest import REPO, kernels_or_skip


def _run(**env):
    return subprocess.run([sys.executable, '-m', 'mmrecprune.ops'], cwd=REPO, text=True,
                          capture_output=True, timeout=600, env=dict(os.environ, **env))


def test_it_builds_and_checks_the_kernels():
    # built in this process first: the subprocess loads the cache
    kernels_or_skip(onthefly_functions, mask_functions)
    proc = _run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'onthefly and masks kernels ready' in proc.stdout
    assert 'fused weight grads' in proc.stdout  # the one node was compared too
    assert 'global masks and zeroed weights equal, bit for bit' in proc.stdout


def test_without_a_compiler_it_says_so_and_exits_1():
    proc = _run(CXX='/nonexistent/c++')
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'cannot be built here' in proc.stdout
    assert 'compiled_ops=False' in proc.stdout
