"""The C++ prototypes of issue 22's option (a) compute what the package computes: the global
prune's masks and pruned weights, ties included, and the normalisation's and gap penalty's
values and gradients. Each builds its prototype once (about 20 s with g++); where a compiler,
ninja or AVX2 is missing the build's own error is the skip reason."""
import re

import pytest
import torch

from mmrecprune.benchmarks import compiled_prototypes
from mmrecprune.benchmarks.compiled_prototypes import (build_prototype, prototype_agreement,
                                                       prototype_functions, prototype_prune)
from mmrecprune.sparsity import apply_masks, global_magnitude_masks, init_masks
from mmrecprune.sparsity.gap_penalty import target_thresholds


def _built(filename):
    try:
        return build_prototype(filename)
    except RuntimeError as error:
        pytest.skip(str(error))


def test_a_missing_source_is_named():
    with pytest.raises(RuntimeError, match='nothing.cpp not found'):
        build_prototype('nothing.cpp')


def test_a_missing_compiler_is_named(monkeypatch):
    monkeypatch.setenv('CXX', '/nonexistent/c++')
    expected = ('AVX2' if torch.backends.cpu.get_cpu_capability() not in ('AVX2', 'AVX512')
                else 'no C++ compiler')
    with pytest.raises(RuntimeError, match=re.escape(expected)):
        build_prototype('onthefly_fused.cpp')


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
def test_prototype_prune_equals_the_package(sizes, step, ratio):
    kernels = _built('global_prune_avx2.cpp')
    ours = _weights(sizes, seed=1, step=step)
    theirs = {name: w.clone() for name, w in ours.items()}
    masks = global_magnitude_masks(ours, init_masks(ours), ratio)
    apply_masks(ours, masks)
    masks_prototype = prototype_prune(kernels, theirs, ratio)
    assert masks_prototype is not None  # the bracket of a representative sample holds
    for name in ours:
        assert torch.equal(masks_prototype[name], masks[name]), name
        assert torch.equal(theirs[name], ours[name]), name


def test_prototype_functions_agree_with_the_package():
    functions = prototype_functions(_built('onthefly_fused.cpp'))
    raw = _weights([(16, 3), (32, 16), (8, 32)], seed=2)
    raw['layer1.weight'][3].zero_()  # a filter whose norm is clamped
    weights = list(raw.values())
    agreement = prototype_agreement(functions, weights, target_thresholds(weights, 0.5), 0.5)
    assert set(agreement) == {'units', 'weight_grads', 'penalty', 'penalty_grads'}
    assert max(agreement.values()) < 1e-5, agreement
    # the swap is undone after each block
    assert compiled_prototypes._GAP_PENALTY._GapPenalty is not functions[1]
    assert compiled_prototypes._HYPERSPHERICAL._UnitFilterList is not functions[0]


def test_the_agreement_sees_a_wrong_gradient():
    """The comparison the benchmark trusts can fail: a prototype whose penalty gradient is
    off by 1 % is reported as such."""
    unit_list, penalty = prototype_functions(_built('onthefly_fused.cpp'))

    class SkewedPenalty(penalty):

        @staticmethod
        def backward(ctx, grad):
            return penalty.backward(ctx, grad * 1.01)

    weights = list(_weights([(16, 8), (8, 16)], seed=4).values())
    agreement = prototype_agreement((unit_list, SkewedPenalty), weights,
                                    target_thresholds(weights, 0.5), 0.5)
    assert agreement['penalty_grads'] > 5e-3
    assert agreement['units'] < 1e-5 and agreement['penalty'] < 1e-5
