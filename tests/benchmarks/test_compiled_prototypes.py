"""The C++ prototype of the global prune (issue 22) computes what the package computes: its
masks and pruned weights, ties included. It is built once (about 20 s with g++); where a
compiler, ninja or AVX2 is missing the build's own error is the skip reason. (The compiled
kernels the package ships are tested in tests/ops.)"""
import re

import pytest
import torch

from mmrecprune.benchmarks.compiled_prototypes import (build_prototype, prototype_prune,
                                                       prototype_prune_one_pass)
from mmrecprune.ops import build
from mmrecprune.sparsity import apply_masks, global_magnitude_masks, init_masks


def _built(filename):
    try:
        return build_prototype(filename)
    except RuntimeError as error:
        pytest.skip(str(error))


def test_a_missing_source_is_named():
    with pytest.raises(RuntimeError, match='nothing.cpp not found'):
        build_prototype('nothing.cpp')


def test_a_missing_compiler_is_named(monkeypatch):
    monkeypatch.setattr(build, '_BUILT', {})
    monkeypatch.setenv('CXX', '/nonexistent/c++')
    expected = ('AVX2' if torch.backends.cpu.get_cpu_capability() not in ('AVX2', 'AVX512')
                else 'no C++ compiler')
    with pytest.raises(RuntimeError, match=re.escape(expected)):
        build_prototype('global_prune_avx2.cpp')


def _weights(sizes, seed, step=None):
    """Random conv weights; with ``step``, magnitudes rounded to multiples of it (many ties)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, (o, c) in enumerate(sizes):
        w = torch.randn(o, c, 3, 3, generator=g) * 0.05
        if step is not None:
            w = (w / step).round() * step
        out[f'layer{i}.weight'] = w
    return out


@pytest.mark.parametrize('sizes, step, ratio', [
    ([(16, 8), (32, 16), (8, 32)], None, 0.3),          # small: the band is every weight
    ([(16, 8), (32, 16), (8, 32)], 0.01, 0.2),          # small, with many ties
    ([(256, 256), (256, 128), (64, 320)], 0.002, 0.2),  # > 2**20: the sampled bracket, ties
    ([(256, 256), (256, 128), (64, 320)], None, 0.5),
])
@pytest.mark.parametrize('prune', [prototype_prune, prototype_prune_one_pass],
                         ids=['two_passes', 'one_pass'])
def test_prototype_prune_equals_the_package(sizes, step, ratio, prune):
    kernels = _built('global_prune_avx2.cpp')
    ours = _weights(sizes, seed=1, step=step)
    theirs = {name: w.clone() for name, w in ours.items()}
    masks = global_magnitude_masks(ours, init_masks(ours), ratio)
    apply_masks(ours, masks)
    masks_prototype = prune(kernels, theirs, ratio)
    assert masks_prototype is not None  # the bracket of a representative sample holds
    for name in ours:
        assert torch.equal(masks_prototype[name], masks[name]), name
        assert torch.equal(theirs[name], ours[name]), name
