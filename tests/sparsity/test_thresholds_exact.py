"""The global magnitude selection against a full stable sort, on adversarial inputs: ties, equal
weights, zeros of both signs, existing masks, extreme ratios, sizes from 1 to over a million
(the sampled band and its fallbacks), every float dtype (bfloat16 takes the PyTorch path)."""
import pytest
import torch

from mmrecprune.sparsity import (global_magnitude_masks, global_magnitude_threshold,
                                 layerwise_magnitude_masks)
from mmrecprune.sparsity import magnitude_selection

pytestmark = pytest.mark.usefixtures('single_thread')

BIG = (1 << 20) + 4099  # above the size where the strided sample brackets the threshold


def _reference(params, masks, ratio):
    """Masks and threshold by a full stable sort of the surviving magnitudes: the ``k``
    smallest pruned, equal magnitudes in order of position (earlier first)."""
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params.values()) \
        else torch.float32
    mags = torch.cat([p.detach().reshape(-1).to(dtype).abs() for p in params.values()])
    keep = torch.cat([masks[name].reshape(-1) for name in params])
    surviving = keep.nonzero().squeeze(1)
    k = int(round(ratio * surviving.numel()))
    order = torch.sort(mags[surviving], stable=True).indices
    new = keep.clone()
    new[surviving[order[:k]]] = False
    threshold = float(mags[surviving[order[k - 1]]]) if k else 0.0
    sizes = [p.numel() for p in params.values()]
    return ({name: part.view(p.shape) for (name, p), part in
             zip(params.items(), new.split(sizes))}, threshold)


def _check(params, masks, ratio):
    expected, threshold = _reference(params, masks, ratio)
    got = global_magnitude_masks(params, masks, ratio)
    for name in params:
        assert got[name].dtype == torch.bool and got[name].shape == params[name].shape
        assert torch.equal(got[name], expected[name]), name
    assert global_magnitude_threshold(params, masks, ratio) == threshold


def _all_kept(params):
    return {name: torch.ones(p.shape, dtype=torch.bool) for name, p in params.items()}


def _random_masks(params, fraction_pruned, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(p.shape, generator=generator) >= fraction_pruned
            for name, p in params.items()}


def _layers(values, sizes):
    """``values`` (flat) cut into weights of ``sizes`` entries (shapes of various ranks)."""
    shapes = {1: (1,), 3: (3,), 17: (17, 1, 1, 1), 70000: (70, 25, 4, 10), BIG: (BIG,)}
    out, start = {}, 0
    for i, size in enumerate(sizes):
        out[f'layer{i}.weight'] = values[start:start + size].reshape(shapes.get(size, (size,)))
        start += size
    return out


SIZES_SMALL = (3, 1, 70000, 17)
SIZES_BIG = (3, 70000, BIG, 1, 17)


@pytest.mark.parametrize('sizes', [SIZES_SMALL, SIZES_BIG], ids=['small', 'big'])
@pytest.mark.parametrize('ratio', [0.0, 1e-6, 0.2, 0.5, 0.999, 0.9999999])
def test_random_weights_match_full_sort(sizes, ratio):
    torch.manual_seed(0)
    params = _layers(torch.randn(sum(sizes)), sizes)
    _check(params, _all_kept(params), ratio)
    _check(params, _random_masks(params, 0.3), ratio)


@pytest.mark.parametrize('sizes', [SIZES_SMALL, SIZES_BIG], ids=['small', 'big'])
@pytest.mark.parametrize('kind', ['few_values', 'all_equal', 'zeros_both_signs'])
@pytest.mark.parametrize('ratio', [0.2, 0.5, 0.97])
def test_ties_broken_by_position_like_full_sort(sizes, kind, ratio):
    torch.manual_seed(0)
    n = sum(sizes)
    if kind == 'few_values':  # magnitudes 0..4: the threshold ties with a fifth of the weights
        values = torch.randint(-4, 5, (n,)).float()
    elif kind == 'all_equal':
        values = torch.full((n,), -0.125)
    else:  # mostly +0.0 and -0.0, a few nonzero weights
        values = torch.randn(n) * (torch.rand(n) < 0.1)
        values[torch.rand(n) < 0.5] *= -1
    params = _layers(values, sizes)
    _check(params, _all_kept(params), ratio)
    _check(params, _random_masks(params, 0.4, seed=2), ratio)


def test_existing_masks_with_a_fully_pruned_layer():
    torch.manual_seed(0)
    params = _layers(torch.randn(sum(SIZES_BIG)), SIZES_BIG)
    masks = _random_masks(params, 0.6)
    masks['layer1.weight'][:] = False
    masks['layer3.weight'][:] = False
    for ratio in (0.2, 0.8):
        _check(params, masks, ratio)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64, 'mixed'])
@pytest.mark.parametrize('sizes', [SIZES_SMALL, SIZES_BIG], ids=['small', 'big'])
def test_dtypes(dtype, sizes):
    torch.manual_seed(0)
    values = torch.randn(sum(sizes)) * 0.05
    params = _layers(values, sizes)
    if dtype == 'mixed':  # float16 and bfloat16 ranked with float32 in float32
        dtypes = [torch.float16, torch.bfloat16, torch.float32]
        params = {name: p.to(dtypes[i % 3]) for i, (name, p) in enumerate(params.items())}
    else:
        params = {name: p.to(dtype) for name, p in params.items()}
    for ratio in (0.2, 0.7):
        _check(params, _all_kept(params), ratio)
        _check(params, _random_masks(params, 0.25), ratio)


@pytest.mark.parametrize('ratio', [0.2, 0.5])
@pytest.mark.parametrize('sampled', ['large', 'small'])
def test_band_missed_by_an_unrepresentative_sample(ratio, sampled, monkeypatch):
    """Every strided sample position holds a large (or a tiny) weight, so the sampled band
    lies far from the threshold: the selection reruns on the right side, still exact."""
    n = 1 << 21
    stride = max(1, n // magnitude_selection._SELECTION_SAMPLE_SIZE)
    torch.manual_seed(0)
    values = torch.rand(n) + 1.0
    values[::stride] = 100.0 + torch.rand(n // stride) if sampled == 'large' \
        else 1e-3 * torch.rand(n // stride)
    params = {'a.weight': values[:n // 2].reshape(-1, 8), 'b.weight': values[n // 2:]}
    scans = []
    scan = magnitude_selection.MagnitudeSelection._scan
    monkeypatch.setattr(magnitude_selection.MagnitudeSelection, '_scan',
                        lambda self, *args: scans.append(args[3:]) or scan(self, *args))
    _check(params, _all_kept(params), ratio)
    assert len(scans) == 8  # masks and threshold: a missed band and its rerun each
    assert (scans[2][0] is None) == (sampled == 'large')  # rerun below the band, or above


def test_layerwise_matches_full_sort_per_layer():
    torch.manual_seed(0)
    params = _layers(torch.randint(-3, 4, (sum(SIZES_BIG),)).float(), SIZES_BIG)
    masks = _random_masks(params, 0.3)
    ratios = {'layer0.weight': 0.5, 'layer2.weight': 0.3, 'layer4.weight': 0.9}
    got = layerwise_magnitude_masks(params, masks, ratios)
    for name, p in params.items():
        expected, _ = _reference({name: p}, {name: masks[name]}, ratios.get(name, 0.0))
        assert torch.equal(got[name], expected[name]), name
