"""N:M masks: groups along the input channels, the N largest kept, the tail left dense, and
iterative pruning under the constraint reaching the pattern."""
import pytest
import torch
from mmdet.models.backbones import ResNet

from mmrecprune.sparsity import (init_masks, nm_groups, nm_magnitude_masks, nm_protected,
                                 nm_tails, nm_ungroup, nm_violations, parse_nm_pattern,
                                 prunable_parameters, sparsity_report)

pytestmark = pytest.mark.usefixtures('single_thread')


def _one(weight, pattern='2:4', **kwargs):
    params = {'w': weight}
    return nm_magnitude_masks(params, init_masks(params), pattern, **kwargs)['w']


@pytest.mark.parametrize('pattern', ['2:4', '1:4', '4:8', '1:2'])
@pytest.mark.parametrize('shape', [(16, 32, 1, 1), (8, 16, 3, 3), (12, 64)])
def test_every_group_keeps_its_n_largest(pattern, shape):
    n, m = parse_nm_pattern(pattern)
    torch.manual_seed(0)
    weight = torch.randn(shape)
    mask = _one(weight, pattern)
    assert mask.shape == weight.shape and mask.dtype == torch.bool
    groups, tail = nm_groups(mask, m)
    assert tail.numel() == 0
    assert (groups.sum(dim=1) == n).all()  # exactly N kept: M - N zeros in every group
    assert ((m - groups.sum(dim=1)) >= m - n).all()
    mags, _ = nm_groups(weight.abs(), m)
    kept_min = mags.masked_fill(~groups, float('inf')).min(dim=1).values
    pruned_max = mags.masked_fill(groups, -1.0).max(dim=1).values
    assert (kept_min >= pruned_max).all()  # the kept ones are the largest of their group
    assert sparsity_report({'w': mask})['sparsity'] == pytest.approx(1 - n / m)
    assert nm_violations({'w': mask}, pattern) == {}


def test_groups_run_along_input_channels_at_each_tap():
    """A 1x1 conv's groups are 4 consecutive input channels of one filter; a 3x3 conv's are 4
    consecutive input channels at one (filter, tap): the channels-last im2col layout."""
    weight = torch.arange(2 * 8 * 3 * 3, dtype=torch.float32).reshape(2, 8, 3, 3)
    groups, tail = nm_groups(weight, 4)
    assert groups.shape == (2 * 3 * 3 * 2, 4) and tail.shape == (18, 0)
    assert groups[0].tolist() == weight[0, 0:4, 0, 0].tolist()
    assert groups[1].tolist() == weight[0, 4:8, 0, 0].tolist()
    assert groups[2].tolist() == weight[0, 0:4, 0, 1].tolist()
    assert torch.equal(nm_ungroup(groups, tail, weight.shape), weight)
    linear = torch.randn(5, 12)
    assert torch.equal(nm_groups(linear, 4)[0], linear.reshape(15, 4))


def test_tail_of_input_channels_not_divisible_by_m_stays_dense():
    torch.manual_seed(0)
    weight = torch.randn(6, 10, 1, 1)  # 10 = 2 groups of 4 + a tail of 2
    mask = _one(weight)
    assert mask[:, 8:].all()  # the tail: kept whole
    groups, tail = nm_groups(mask, 4)
    assert (groups.sum(dim=1) == 2).all() and tail.all()
    assert nm_tails({'w': mask}, '2:4') == {'w': 12}
    assert nm_violations({'w': mask}, '2:4') == {}  # the tail is no group: not a violation
    depthwise = torch.randn(8, 1, 3, 3)  # in=1 per group: no group at all, left dense
    assert _one(depthwise).all()


def test_already_pruned_entries_stay_pruned_and_ties_go_by_position():
    weight = torch.ones(1, 8, 1, 1)
    keep = torch.ones_like(weight, dtype=torch.bool)
    keep[0, 0] = keep[0, 5] = keep[0, 6] = False
    params = {'w': weight}
    mask = nm_magnitude_masks(params, {'w': keep}, '2:4')['w'].flatten().tolist()
    # group 1 (all equal): its first two survivors kept; group 2: its two survivors
    assert mask == [False, True, True, False, True, False, False, True]
    assert nm_protected(weight, keep, '2:4').flatten().tolist() == mask


def test_iterative_rounds_reach_the_pattern():
    """20 % of the surviving weights per round, the N largest of each group protected: 20,
    36, 48.8 %, then the candidates run out at exactly 2:4 (50 %)."""
    torch.manual_seed(0)
    model = ResNet(depth=18, base_channels=8)
    params = prunable_parameters(model)
    masks = init_masks(params)
    seen = []
    for _ in range(5):
        masks = nm_magnitude_masks(params, masks, '2:4', ratio=0.2)
        seen.append(round(sparsity_report(masks)['sparsity'], 4))
    assert seen[:3] == pytest.approx([0.2, 0.36, 0.488], abs=1e-4)
    assert seen[3:] == [0.5, 0.5]
    assert nm_violations(masks, '2:4') == {}
    one_shot = nm_magnitude_masks(params, init_masks(params), '2:4')
    assert sparsity_report(one_shot)['sparsity'] == 0.5


def test_layerwise_ranking_prunes_each_layer_alike():
    torch.manual_seed(0)
    params = prunable_parameters(ResNet(depth=18, base_channels=8))
    masks = nm_magnitude_masks(params, init_masks(params), '2:4', ratio=0.3,
                               ranking='layerwise')
    for layer in sparsity_report(masks)['layers'].values():
        assert layer['total'] - layer['kept'] == round(0.3 * layer['total'])


@pytest.mark.parametrize('pattern', ['4:2', '2:2', '0:4', '2:4 ', '2/4', 2, '1:64', None])
def test_bad_patterns_are_refused(pattern):
    with pytest.raises(ValueError, match="'N:M'"):
        parse_nm_pattern(pattern)


def test_violations_are_counted():
    mask = torch.ones(2, 8, 1, 1, dtype=torch.bool)
    mask[0, :2] = False  # filter 0's first group keeps 2, every other group keeps 4
    assert nm_violations({'w': mask}, '2:4') == {'w': 3}
