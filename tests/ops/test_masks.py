"""The compiled mask kernels give the eager code's results bit for bit: the magnitude
selection's pass (mask, count, band), the zeroing of pruned entries, the global and layerwise
masks built on them, ``WeightMasks`` around optimizer steps, and a pruner's rounds. Built once
(about 25 s with g++); where a compiler, ninja or AVX2 is missing the build's own error is the
skip reason."""
import copy
import pickle

import numpy as np
import pytest
import torch

from mmrecprune.methods import IterativeMagnitudePruner
from mmrecprune.models import ImageClassifier
from mmrecprune.ops import mask_functions
from mmrecprune.sparsity import (WeightMasks, apply_masks, global_magnitude_masks, init_masks,
                                 layerwise_magnitude_masks)
from mmrecprune.sparsity.mask_enforcement import keep_bits, zero_pruned_bits_
from mmrecprune.sparsity.magnitude_selection import MagnitudeSelection
from tests.conftest import kernels_or_skip

pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.fixture(scope='module')
def functions():
    return kernels_or_skip(mask_functions)


def _special(n, seed):
    """``n`` float32 values with nan, +-inf, -0 and ties among them."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g) * 0.05
    specials = torch.tensor([float('nan'), float('inf'), -0.0, -float('inf'), 0.03, -0.03])
    w[1:n:11][:6] = specials[:len(w[1:n:11][:6])]
    w[100:140] = 0.03  # runs of ties
    w[200:210] = -0.03
    return w


# sizes: under one AVX2 iteration, not a multiple of 32, and over the kernel's block of 2**16
@pytest.mark.parametrize('n', [7, 1000, 3 * 65536 + 45])
@pytest.mark.parametrize('lo, hi', [(0.02, 0.04), (None, 0.04), (0.02, None), (None, None),
                                    (0.03, 0.03)])
@pytest.mark.parametrize('with_keep', [True, False])
def test_the_scan_writes_the_eager_mask_count_and_band(functions, n, lo, hi, with_keep):
    w = _special(n, seed=n)
    keep = torch.rand(n, generator=torch.Generator().manual_seed(1)) > 0.3
    keep = keep if with_keep else None
    layer = MagnitudeSelection({'w': w}, {'w': torch.ones(n, dtype=torch.bool)})
    eager_out, compiled_out = (torch.zeros(n, dtype=torch.bool) for _ in range(2))
    eager = layer._scan_numpy(w.numpy(), None if keep is None else keep.numpy(),
                              eager_out.numpy(), lo, hi)
    compiled = functions.magnitude_scan(w, keep, compiled_out, lo, hi)
    assert torch.equal(compiled_out, eager_out)
    assert compiled[0] == eager[0]
    np.testing.assert_array_equal(compiled[1], eager[1])
    np.testing.assert_array_equal(compiled[2], eager[2])  # (nan where both hold one)


def test_the_scan_does_not_depend_on_the_thread_count(functions):
    w, keep = _special(5 * 65536 + 3, seed=3), None
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out = torch.empty(w.numel(), dtype=torch.bool)
        results.append((functions.magnitude_scan(w, keep, out, 0.01, 0.02), out))
    torch.set_num_threads(1)
    (first, out1), (second, out2) = results
    assert torch.equal(out1, out2) and first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])


def test_the_zeroing_is_the_bitwise_and_of_the_eager_path(functions):
    tensors = [_special(n, seed=n).view(-1, 1) for n in (7, 1000, 3 * 65536 + 45)]
    tensors.append(torch.arange(-500, 500, dtype=torch.int32))  # any 4-byte dtype
    g = torch.Generator().manual_seed(2)
    masks = [torch.rand(t.shape, generator=g) > 0.5 for t in tensors]
    eager = [t.clone() for t in tensors]
    zero_pruned_bits_(eager, [keep_bits(m, t.dtype) for m, t in zip(masks, eager)])
    assert functions.zero_pruned(tensors, masks) is True
    for got, want in zip(tensors, eager):
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))  # +0, not -0


def test_tensors_the_kernels_do_not_take_are_left_to_eager(functions):
    x = torch.randn(8, 8)
    mask = torch.rand(8, 8) > 0.5
    for tensors, masks in (([x.double()], [mask]), ([x.t()], [mask]),
                           ([x], [mask.t()]), ([x], [mask.float()])):
        before = [t.clone() for t in tensors]
        assert functions.zero_pruned(tensors, masks) is None
        assert all(torch.equal(a, b) for a, b in zip(tensors, before))
    out = torch.empty(64, dtype=torch.bool)
    assert functions.magnitude_scan(x.double().view(-1), None, out, 0.1, 0.2) is None


def _conv_weights(seed, sizes=((64, 64, 3, 3), (256, 64, 1, 1), (128, 128, 3, 3),
                               (512, 256, 3, 3))):
    g = torch.Generator().manual_seed(seed)
    return {f'layer{i}.weight': torch.randn(s, generator=g) * 0.05 for i, s in enumerate(sizes)}


@pytest.mark.parametrize('ranking', [global_magnitude_masks, layerwise_magnitude_masks])
def test_masks_equal_the_eager_ones_over_rounds(functions, ranking):
    # over 2**20 weights (the sampled bracket), with ties, then a second round on survivors
    params = _conv_weights(seed=4)
    params['layer1.weight'][:3] = 0.01  # ties
    masks = init_masks(params)
    for _ in range(2):
        eager = ranking(params, masks, 0.2)
        compiled = ranking(params, masks, 0.2, functions=functions)
        assert all(torch.equal(eager[n], compiled[n]) for n in params)
        masks = eager


def test_a_bracket_the_sample_misses_is_rerun_to_the_same_masks(functions):
    # the sample's strided entries are all tiny, the others large: the bracket misses
    params = {'w': torch.full((1 << 21, ), 1.0)}
    stride = params['w'].numel() // (1 << 18)
    params['w'][::stride] = 1e-3
    params['w'][1::7] += torch.rand(params['w'][1::7].shape) * 1e-2
    masks = init_masks(params)
    eager = global_magnitude_masks(params, masks, 0.5)
    assert torch.equal(global_magnitude_masks(params, masks, 0.5, functions=functions)['w'],
                       eager['w'])


def test_apply_masks_and_weight_masks_zero_as_eager(functions):
    params = _conv_weights(seed=5, sizes=((16, 8, 3, 3), (32, 16, 1, 1)))
    masks = global_magnitude_masks(params, init_masks(params), 0.6)
    grads = {n: torch.randn_like(p) for n, p in params.items()}
    results = []
    for fns in (None, functions):
        tensors = {n: p.clone() for n, p in params.items()}
        apply_masks(tensors, masks, functions=fns)
        weights = {n: torch.nn.Parameter(p.clone()) for n, p in params.items()}
        for n, p in weights.items():
            p.grad = grads[n].clone()
        enforced = WeightMasks(weights, masks, functions=fns)
        enforced.zero_gradients()
        with torch.no_grad():
            for p in weights.values():
                p.add_(1.0)  # what a step would move
        enforced.apply()
        results.append((tensors, {n: (p.detach(), p.grad) for n, p in weights.items()}))
    (eager_t, eager_w), (comp_t, comp_w) = results
    for n in params:
        assert torch.equal(eager_t[n], comp_t[n])
        assert torch.equal(eager_w[n][0], comp_w[n][0]) and torch.equal(eager_w[n][1],
                                                                        comp_w[n][1])


def test_weight_masks_fall_back_where_the_kernels_do_not_apply(functions):
    mask = torch.rand(4, 4, 3, 3) > 0.5
    grads = []
    for fns in (None, functions):
        weight = torch.nn.Parameter(torch.randn(4, 4, 3, 3))
        weight.grad = torch.arange(144.0).view(3, 3, 4, 4).permute(2, 3, 0, 1)  # not contiguous
        WeightMasks({'w': weight}, {'w': mask}, functions=fns).zero_gradients()
        grads.append(weight.grad)
    assert torch.equal(grads[0], grads[1])
    assert (grads[1][~mask] == 0).all() and (grads[1][mask] != 0).sum() >= mask.sum() - 1


def _tiny_classifier():
    return ImageClassifier(backbone=dict(type='mmdet.ResNet', depth=18, base_channels=8,
                                         out_indices=(3, )),
                           in_channels=64, num_classes=4)


def test_a_pruners_rounds_and_steps_are_bit_identical_to_eager(functions):
    batch = torch.randn(4, 3, 32, 32)
    states = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = _tiny_classifier()
        pruner = IterativeMagnitudePruner(prune_ratio=0.3, rewind_to='none',
                                          compiled_ops=compiled)
        pruner.attach(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                                    weight_decay=1e-2)
        pruner.attach_optimizer(optimizer)
        for _ in range(2):
            pruner.step()
            for _ in range(2):
                optimizer.zero_grad()
                model(batch).sum().backward()
                pruner.before_optimizer_step()
                optimizer.step()
                pruner.after_optimizer_step()
        states.append((pruner.masks, model.state_dict()))
    (masks_e, state_e), (masks_c, state_c) = states
    assert all(torch.equal(masks_e[n], masks_c[n]) for n in masks_e)
    assert all(torch.equal(state_e[k], state_c[k]) for k in state_e)
    assert 0.45 < 1 - sum(int(m.sum()) for m in masks_c.values()) / sum(
        m.numel() for m in masks_c.values()) < 0.55  # 1 - 0.7 ** 2 of the weights pruned


def test_a_compiled_pruner_pickles_and_copies(functions):
    model = _tiny_classifier()
    pruner = IterativeMagnitudePruner(rewind_to='none', compiled_ops=True)
    pruner.attach(model)
    pruner.step()
    for clone in (pickle.loads(pickle.dumps(pruner)), copy.deepcopy(pruner)):
        assert clone.compiled_ops and clone.enforced.functions is not None
        assert all(torch.equal(clone.masks[n], pruner.masks[n]) for n in pruner.masks)


def test_a_keep_byte_other_than_one_counts_as_kept_as_in_numpy(functions):
    # a bool tensor viewed from bytes can hold 2; NumPy's logical_and takes it as True
    n = 100
    w = _special(n, seed=6)
    keep = (torch.arange(n) % 3).to(torch.uint8).view(torch.bool)
    eager_out, compiled_out = (torch.zeros(n, dtype=torch.bool) for _ in range(2))
    layer = MagnitudeSelection({'w': w}, {'w': torch.ones(n, dtype=torch.bool)})
    eager = layer._scan_numpy(w.numpy(), keep.numpy(), eager_out.numpy(), 0.01, 0.05)
    compiled = functions.magnitude_scan(w, keep, compiled_out, 0.01, 0.05)
    assert torch.equal(compiled_out.view(torch.uint8), eager_out.view(torch.uint8))
    assert compiled[0] == eager[0]
    np.testing.assert_array_equal(compiled[1], eager[1])
