"""Building the compiled kernels: what stops a build is named, with the way on without them."""
import os
import re
import time

import pytest
import torch

from mmrecprune.methods import IterativeMagnitudePruner, OnTheFlyPruner
from mmrecprune.ops import OpsUnavailable, build, build_extension, masks, onthefly

EXPECTED = ('AVX2' if torch.backends.cpu.get_cpu_capability() not in ('AVX2', 'AVX512')
            else 'no C++ compiler')


@pytest.fixture
def nothing_built(monkeypatch):
    """No build cached in this process (a test before may have built the kernels)."""
    monkeypatch.setattr(build, '_BUILT', {})
    monkeypatch.setattr(onthefly, '_AUTOGRAD', [])
    monkeypatch.setattr(masks, '_KERNELS', [])


def test_a_missing_source_is_named(nothing_built, tmp_path):
    with pytest.raises(OpsUnavailable, match=re.escape(f'{tmp_path}/nothing.cpp not found')):
        build_extension(str(tmp_path / 'nothing.cpp'))


def test_a_missing_compiler_is_named(nothing_built, monkeypatch):
    monkeypatch.setenv('CXX', '/nonexistent/c++')
    with pytest.raises(OpsUnavailable, match=re.escape(EXPECTED)):
        build_extension('onthefly.cpp')


PRUNERS = [OnTheFlyPruner, IterativeMagnitudePruner]


@pytest.mark.parametrize('pruner', PRUNERS)
def test_the_pruner_refuses_compiled_ops_it_cannot_build_and_names_the_fix(
        pruner, nothing_built, monkeypatch):
    monkeypatch.setenv('CXX', '/nonexistent/c++')
    with pytest.raises(OpsUnavailable, match=re.escape(EXPECTED)) as caught:
        pruner(compiled_ops=True)
    assert f'{pruner.__name__}(compiled_ops=True)' in str(caught.value)
    assert 'set compiled_ops=False' in str(caught.value)
    assert pruner(compiled_ops=False).compiled_ops is False  # eager needs no compiler


@pytest.mark.parametrize('pruner', PRUNERS)
@pytest.mark.parametrize('value', ['yes', 1, None])
def test_compiled_ops_must_be_a_bool(pruner, value):
    with pytest.raises(ValueError, match='compiled_ops must be True or False'):
        pruner(compiled_ops=value)


def test_a_bad_argument_is_refused_before_the_build(nothing_built, monkeypatch):
    monkeypatch.setenv('CXX', '/nonexistent/c++')  # a build would raise OpsUnavailable
    with pytest.raises(ValueError, match='prune_ratio'):
        IterativeMagnitudePruner(prune_ratio=2.0, compiled_ops=True)


@pytest.mark.parametrize('source, opening', [('onthefly.cpp', '// On-the-fly'),
                                             ('masks.cpp', "// Unstructured masks'")])
def test_the_kernels_source_ships_inside_the_package(source, opening):
    assert (build.CSRC.endswith('mmrecprune/ops/csrc')
            and open(f'{build.CSRC}/{source}').read().startswith(opening))


def test_a_failed_build_names_the_compilers_error(nothing_built, tmp_path, monkeypatch):
    if build._missing() is not None:
        pytest.skip(build._missing())
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'cache'))  # nothing left behind
    source = tmp_path / 'broken.cpp'
    source.write_text('int broken( {\n')
    with pytest.raises(OpsUnavailable,
                       match=r'building broken\.cpp failed: .*broken\.cpp:1:\d+: error') as caught:
        build_extension(str(source), name='mmrecprune_test_broken')
    assert 'ninja: build stopped' not in str(caught.value)


def test_a_lock_left_by_a_killed_build_is_named_not_waited_for(nothing_built, tmp_path,
                                                               monkeypatch):
    """torch waits for a build's lock file forever; one left by a killed build (older than
    any build takes) is reported with the file to remove."""
    if build._missing() is not None:
        pytest.skip(build._missing())
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'cache'))
    lock = tmp_path / 'cache' / build.extension_name('mmrecprune_test_locked') / 'lock'
    lock.parent.mkdir(parents=True)
    lock.touch()
    stale = time.time() - build.STALE_LOCK_SECONDS - 60
    os.utime(lock, (stale, stale))
    source = tmp_path / 'locked.cpp'
    source.write_text('int locked() { return 0; }\n')
    with pytest.raises(OpsUnavailable, match=re.escape(f'{lock} is 11 min old')):
        build_extension(str(source), name='mmrecprune_test_locked')
    assert lock.exists()  # reported, not removed: another process might hold it
