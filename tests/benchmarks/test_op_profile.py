"""Operator profiles of a training step (mmrecprune.benchmarks.op_profile), on a real step."""
import pytest
import torch
from torch import nn

from mmrecprune.benchmarks.op_profile import (CNN_STEP_GROUPS, added_op_times, group_op_times,
                                              op_times)


def _step(model, optimizer, x):
    def step():
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
    return step


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(8, 8, 3))
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), torch.randn(
        2, 3, 16, 16)


def test_op_times_sees_a_cnn_step_and_groups_it(cnn):
    times = op_times(_step(*cnn), steps=2)
    assert all(t >= 0 for t in times.values())
    assert list(times.values()) == sorted(times.values(), reverse=True)
    groups = group_op_times(times)
    assert list(groups) == [g for g, _ in CNN_STEP_GROUPS] + ['other']
    # every group of this step has work in it, and the groups add up to the operators
    for group in ('conv forward', 'conv backward', 'batch norm', 'max-pool', 'relu'):
        assert groups[group] > 0, group
    assert sum(groups.values()) == pytest.approx(sum(times.values()))


def test_added_op_times_ranks_what_a_variant_adds(cnn):
    model, optimizer, x = cnn
    plain = op_times(_step(model, optimizer, x), steps=2)
    extra = nn.Sequential(model, nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3))
    heavier = op_times(_step(extra, torch.optim.SGD(extra.parameters(), lr=0.1), x), steps=2)
    added = dict(added_op_times(heavier, plain, top=50))
    assert len(added) <= 50
    assert added['aten::convolution_backward'] > 0  # two more convs' backward
    assert list(added.values()) == sorted(added.values(), reverse=True)


def test_op_times_refuses_zero_steps(cnn):
    with pytest.raises(ValueError, match='steps must be >= 1'):
        op_times(_step(*cnn), steps=0)
