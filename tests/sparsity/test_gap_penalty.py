"""The gap penalty computed a fan-in group at a time equals the per-layer definition (value,
gradient, target-set borders), and hyperspherical unit filters keep their value and gradient."""
import math

import pytest
import torch

from mmrecprune.sparsity import gap_penalty, target_thresholds, unit_filters

pytestmark = pytest.mark.usefixtures('single_thread')

# ResNet-18-like shapes at a small width: several layers per fan-in, 1x1 shortcuts, uneven
# filter scales, an all-zero filter
SHAPES = [(4, 3, 3, 3), (8, 8, 3, 3), (8, 8, 3, 3), (16, 8, 3, 3), (16, 16, 3, 3),
          (16, 8, 1, 1), (16, 16, 3, 3), (32, 16, 3, 3), (32, 16, 1, 1), (8, 8, 3, 3)]


def reference_unit_filters(weight):
    """The per-layer definition (the implementation before issue 22)."""
    norms = weight.flatten(1).norm(dim=1).clamp_min(1e-12)
    return weight / norms.view(-1, *([1] * (weight.dim() - 1)))


def reference_magnitudes(weight):
    return reference_unit_filters(weight).abs() * math.sqrt(weight[0].numel())


def reference_thresholds(weights, fraction):
    out = []
    for weight in weights:
        u = reference_magnitudes(weight.detach()).flatten()
        k = max(1, min(u.numel(), int(round(fraction * u.numel()))))
        out.append(u.kthvalue(k).values)
    return torch.stack(out)


def reference_penalty(weights, thresholds, margin):
    terms = []
    for weight, border in zip(weights, thresholds):
        u = reference_magnitudes(weight)
        target = u <= border
        pruned = target.sum().clamp_min(1)
        kept = (~target).sum().clamp_min(1)
        terms.append((u * target).sum() / pruned
                     + (torch.relu(margin - u) * ~target).sum() / kept)
    return torch.stack(terms).mean()


def _weights(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    weights = [torch.randn(s, dtype=dtype) * (torch.rand(s[0], 1, 1, 1, dtype=dtype) * 3 + 0.1)
               for s in SHAPES]
    weights[4][2] = 0  # an all-zero filter: zero gradient, no nan
    weights[6][1] *= 1e-14  # a filter below the norm clamp
    return [w.requires_grad_() for w in weights]


@pytest.mark.parametrize('fraction,margin', [(0.5, 0.5), (0.3, 1.2), (0.8, 0.0)])
def test_penalty_equals_the_per_layer_definition(fraction, margin):
    weights = _weights()
    thresholds = target_thresholds(weights, fraction)
    torch.testing.assert_close(thresholds, reference_thresholds(weights, fraction))
    # borders between entries (no entry sits on them): the same target sets whatever the
    # rounding of the magnitudes
    borders = thresholds * (1 + 1e-6)
    ours = gap_penalty(weights, borders, margin)
    reference = reference_penalty(weights, borders, margin)
    torch.testing.assert_close(ours, reference)
    for a, b in zip(torch.autograd.grad(ours, weights),
                    torch.autograd.grad(reference, weights)):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)


def test_the_kth_entry_is_in_its_target_set():
    """Borders from target_thresholds are the k-th smallest magnitude itself; the penalty sees
    the same bits, so that entry is in the target set (as in the per-layer definition)."""
    weights = _weights(1, torch.float32)
    ours = gap_penalty(weights, target_thresholds(weights, 0.5), 0.5)
    reference = reference_penalty(weights, reference_thresholds(weights, 0.5), 0.5)
    torch.testing.assert_close(ours, reference)
    for a, b in zip(torch.autograd.grad(ours, weights),
                    torch.autograd.grad(reference, weights)):
        torch.testing.assert_close(a, b)


def test_unit_filters_value_and_gradient_unchanged():
    for weight in _weights(2):
        grad = torch.randn_like(weight)
        ours = unit_filters(weight)
        reference = reference_unit_filters(weight)
        torch.testing.assert_close(ours, reference)
        torch.testing.assert_close(torch.autograd.grad(ours, weight, grad)[0],
                                   torch.autograd.grad(reference, weight, grad)[0])
        with torch.no_grad():  # the same bits with and without autograd
            assert torch.equal(unit_filters(weight), ours.detach())
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(unit_filters, (weight, ))
