"""The compiled on-the-fly kernels compute what eager PyTorch computes: the unit filters, their
backward, the gap penalty and its gradient, in a real training step and in a real run with
resume. Built once (about 30 s with g++); where a compiler, ninja or AVX2 is missing the
build's own error is the skip reason."""
import copy
import pickle

import pytest
import torch

from mmrecprune.methods import OnTheFlyPruner
from mmrecprune.models import ImageClassifier
from mmrecprune.ops import compiled_applies, eager_agreement, onthefly_functions
from mmrecprune.ops.onthefly import OnTheFlyFunctions
from mmrecprune.sparsity import target_thresholds
from mmrecprune.sparsity.gap_penalty import _GapPenalty, gap_penalty
from mmrecprune.sparsity.hyperspherical import unit_filter_list
from tests.conftest import kernels_or_skip

pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.fixture(scope='module')
def functions():
    return kernels_or_skip(onthefly_functions)


def _weights(sizes, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(o, c, 3, 3, generator=g, dtype=dtype) * 0.05 for o, c in sizes]


def test_the_kernels_agree_with_eager_pytorch(functions):
    weights = _weights([(16, 3), (32, 16), (8, 32), (64, 64)], seed=2)
    weights[1][3].zero_()  # a filter whose norm is clamped
    agreement = eager_agreement(functions, weights, target_thresholds(weights, 0.5), 0.5)
    assert set(agreement) == {'units', 'weight_grads', 'penalty', 'penalty_grads',
                              'fused_penalty', 'fused_weight_grads'}
    assert max(agreement.values()) < 1e-5, agreement


def test_the_agreement_sees_a_wrong_gradient(functions):
    """The comparison the benchmark and ``python -m mmrecprune.ops`` trust can fail."""

    def skewed_penalty(borders, margin, *units):
        return _Skewed.apply(borders, margin, *units)

    class _Skewed(_GapPenalty):

        @staticmethod
        def backward(ctx, grad):
            return _GapPenalty.backward(ctx, grad * 1.01)

    weights = _weights([(16, 8), (8, 16)], seed=4)
    skewed = OnTheFlyFunctions(functions.unit_filters, skewed_penalty, None)
    agreement = eager_agreement(skewed, weights, target_thresholds(weights, 0.5), 0.5)
    assert agreement['penalty_grads'] > 5e-3
    assert agreement['units'] < 1e-5 and agreement['penalty'] < 1e-5


def test_what_the_kernels_do_not_take_runs_eager_pytorch_bit_for_bit(functions):
    weights = [w.requires_grad_() for w in _weights([(16, 8), (8, 16)], 5, torch.float64)]
    assert not compiled_applies(weights)
    assert not compiled_applies([weights[0].float().transpose(0, 1)])  # not contiguous
    assert not compiled_applies([torch.empty(0, 8, 3, 3)])  # no filters: eager, no crash
    assert unit_filter_list([torch.empty(0, 8, 3, 3)], functions=functions)[0].shape == (0, 8, 3,
                                                                                       3)
    thresholds = target_thresholds(weights, 0.5)
    results = []
    for fns in (None, functions):
        units = unit_filter_list(weights, functions=fns)
        penalty = gap_penalty(weights, thresholds, 0.5, units, fns)
        grads = torch.autograd.grad(penalty + sum(u.sum() for u in units), weights)
        results.append((units, penalty, grads))
    (units, penalty, grads), (units_c, penalty_c, grads_c) = results
    assert torch.equal(penalty, penalty_c)
    assert all(map(torch.equal, units, units_c)) and all(map(torch.equal, grads, grads_c))


def _classifier():
    torch.manual_seed(0)
    return ImageClassifier(backbone=dict(type='mmdet.ResNet', depth=18, base_channels=8,
                                         out_indices=(3, ),
                                         conv_cfg=dict(type='mmrecprune.HypersphericalConv')),
                           in_channels=64, num_classes=4)


@pytest.mark.parametrize('frozen_stage', [False, True], ids=['all_trained', 'layer1_frozen'])
def test_a_training_step_with_compiled_ops_equals_the_eager_one(functions, frozen_stage):
    """With a frozen stage too (mmdet's and mmseg's ``frozen_stages=1``): its prunable convs
    count in the penalty, get no gradient, and the one node still computes the penalty."""
    torch.manual_seed(1)
    x, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    losses, grads = [], []
    # borders between entries, as both runs' pruners use them: a one-ulp difference in a unit
    # filter flips the target set of an entry that sits on its border (a discontinuity, not an
    # error; the run test below follows the borders each run selects)
    for compiled in (False, True):
        model = _classifier()
        if frozen_stage:
            model.backbone.layer1.requires_grad_(False)
        pruner = OnTheFlyPruner(sparsity=0.5, penalty=3.0, compiled_ops=compiled)
        pruner.attach(model)
        weights = list(pruner.params.values())
        pruner.thresholds = target_thresholds(weights, 0.5) * (1 + 1e-5)
        pruner._thresholds_at = 0
        loss = torch.nn.functional.cross_entropy(model(x, mode='tensor'), labels)
        loss = pruner.regularize(loss)
        assert pruner._shared.units(pruner._conv_names) is not None  # the shared path ran
        # compiled, the penalty came from the normalisation's node
        assert (pruner._shared.penalty(pruner._conv_names) is not None) is compiled
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad for p in model.parameters()])
        assert all((p.grad is None) == frozen_stage
                   for p in model.backbone.layer1.parameters())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=0)
    # float32 rounding, which batch norm over a batch of 4 amplifies: the same 3e-5 with the
    # penalty's coefficient at 0, and 1e-2 between the penalty on and off
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        assert a is None or (b - a).norm() <= 2e-4 * a.norm()
    # a model whose convs share compiled unit filters still copies (EMA) and pickles
    copy.deepcopy(model)
    assert pickle.loads(pickle.dumps(model))._forward_pre_hooks


def test_the_fused_node_alone_and_its_agreement_can_fail(functions):
    """The one node of unit filters and penalty with only one of its outputs used (a conv not
    run; a loss without the penalty) gives eager's gradients, and a node that is 1 % off is
    caught by the comparison."""
    weights = _weights([(16, 8), (8, 16), (12, 8)], seed=6)
    borders = target_thresholds(weights, 0.5) * (1 + 1e-5)
    borders[2] = float('nan')  # the third weight is normalised, not penalised
    for use_units, use_penalty in ((False, True), (True, False)):
        grads = []
        for fused in (False, True):
            leaves = [w.clone().requires_grad_() for w in weights]
            if fused:
                *units, penalty = functions.units_and_penalty(None, borders, 0.5, *leaves)
            else:
                units = unit_filter_list(leaves)
                penalty = gap_penalty(leaves[:2], borders[:2], 0.5, units=units[:2])
            loss = units[0].sum() * use_units + penalty * use_penalty
            grads.append(torch.autograd.grad(loss, leaves, allow_unused=True))
        for a, b in zip(*grads):
            assert (a is None) == (b is None) or (a is None and not b.any())
            if a is not None:
                assert (b - a).norm() <= 1e-5 * a.norm().clamp_min(1e-30)

    def off(graph, borders, margin, *weights):
        *units, penalty = functions.units_and_penalty(graph, borders, margin, *weights)
        return (*units, penalty * 1.01)

    agreement = eager_agreement(OnTheFlyFunctions(functions.unit_filters, functions.gap_penalty,
                                                  off), weights, target_thresholds(weights, 0.5),
                                0.5)
    assert agreement['fused_penalty'] > 5e-3 and agreement['units'] < 1e-5


def test_the_results_do_not_depend_on_the_thread_count(functions):
    """Filters are split over the intra-op threads, each layer's row sums added in row order:
    the same bits on 1 and on 2 threads (layers large enough to be split)."""
    weights = _weights([(256, 256), (128, 64)], seed=7)
    borders = target_thresholds(weights, 0.5)
    upstream = [torch.randn_like(w) for w in weights]
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            leaves = [w.clone().requires_grad_() for w in weights]
            *units, penalty = functions.units_and_penalty(None, borders, 0.5, *leaves)
            grads = torch.autograd.grad([*units, penalty], leaves, [*upstream, torch.tensor(2.)])
            results.append([*units, penalty, *grads])
    finally:
        torch.set_num_threads(before)
    assert all(map(torch.equal, *results))
