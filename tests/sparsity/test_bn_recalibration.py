"""BN recalibration: the running statistics become those of training-mode passes over the
calibration batches, and nothing else about the model changes."""
import copy

import pytest
import torch
from mmdet.models.backbones import ResNet
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmrecprune.sparsity.bn_recalibration import recalibrate_batchnorm

pytestmark = pytest.mark.usefixtures('single_thread')


def _train_mode_inputs(model, batch):
    """What every BN receives in a training-mode pass (on a copy: statistics untouched)."""
    model = copy.deepcopy(model)
    seen = {}
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            m.register_forward_pre_hook(
                lambda mod, args, name=name: seen.__setitem__(name, args[0].detach()))
    for m in model.modules():  # not model.train(): mmdet's ResNet.train() keeps some in eval
        m.training = True
    with torch.no_grad():
        model(batch)
    return seen


@pytest.fixture
def resnet():
    torch.manual_seed(0)
    model = ResNet(depth=18, base_channels=8, out_indices=(3, ), frozen_stages=-1)
    model.eval()
    return model


def test_one_batch_gives_the_train_mode_statistics(resnet):
    batch = torch.randn(8, 3, 32, 32)
    expected = _train_mode_inputs(resnet, batch)
    weights = {k: v.clone() for k, v in resnet.state_dict().items() if 'running' not in k
               and 'num_batches' not in k}
    seen = recalibrate_batchnorm(resnet, [batch])
    assert seen == 8
    for name, m in resnet.named_modules():
        if isinstance(m, _BatchNorm):
            x = expected[name].transpose(0, 1).flatten(1)
            assert torch.allclose(m.running_mean, x.mean(1), atol=1e-5), name
            assert torch.allclose(m.running_var, x.var(1, unbiased=True), atol=1e-4), name
            assert m.momentum == 0.1  # restored
    assert not resnet.training and not any(m.training for m in resnet.modules())
    for k, v in resnet.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k  # no weight moved


def test_several_batches_average_equally():
    bn = nn.BatchNorm2d(3)
    batches = [torch.randn(4, 3, 5, 5) * (i + 1) + i for i in range(3)]
    recalibrate_batchnorm(nn.Sequential(bn), batches)
    means = torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0)
    assert torch.allclose(bn.running_mean, means, atol=1e-5)
    assert int(bn.num_batches_tracked) == 3


def test_progress_and_forward_are_used():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    done = []
    recalibrate_batchnorm(model, [{'img': torch.randn(2, 3, 4, 4)}] * 2,
                          forward=lambda m, b: m(b['img']), progress=done.append)
    assert done == [1, 1]  # a dict batch counts by len(); tensors by their first dim


def test_refusals_leave_the_model_as_it_was():
    with pytest.raises(ValueError, match='no BatchNorm'):
        recalibrate_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1)), [torch.randn(1, 3, 4, 4)])
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(2.0)
    with pytest.raises(ValueError, match='got no batch'):
        recalibrate_batchnorm(nn.Sequential(bn), [])
    assert torch.all(bn.running_mean == 2.0) and bn.momentum == 0.1
