"""RecPrune's model: ``rec_downsample`` reconstructs the average-pooled input (a cheaper
variant), 1 keeps the paper's full-resolution target, and bad values are refused."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import BaseDataElement

import mmrecprune  # noqa: F401
from mmrecprune.registry import MODELS

pytestmark = pytest.mark.usefixtures('single_thread')
CFG = 'configs/recprune/recprune_r18-w16_7r-1e_fashionmnist.py'


def build(**overrides):
    cfg = Config.fromfile(CFG).model
    cfg.backbone.base_channels = 4
    cfg.decoder.in_channels = (4, 8, 16, 32)
    cfg.in_channels = 32
    cfg.update(overrides)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmrecprune'):
        return MODELS.build(cfg)


def batch(size=56):
    torch.manual_seed(1)
    return dict(inputs=[torch.randint(0, 255, (3, size, size), dtype=torch.uint8)
                        for _ in range(2)],
                data_samples=[BaseDataElement(gt_label=torch.tensor([i])) for i in range(2)])


def rec_loss(model, data):
    model.train()
    data = model.data_preprocessor(data, True)
    return model(**data, mode='loss')['loss_rec'], data['inputs']


@pytest.mark.parametrize('size', [56, 57])
def test_downsampled_target_is_the_pooled_input(size):
    model = build(rec_downsample=2)
    seen = {}
    model.decoder.register_forward_hook(lambda m, args, out: seen.update(out=out))
    loss, inputs = rec_loss(model, batch(size))
    half = -(-size // 2)  # ceil: an odd edge pools what is there
    assert seen['out'].shape[-2:] == (half, half)
    target = F.avg_pool2d(inputs, 2, ceil_mode=True)
    expected = model.rec_weight * F.mse_loss(seen['out'], target)
    torch.testing.assert_close(loss, expected)
    # the pooled target is not the input: a loss against the input itself would differ
    assert not torch.allclose(target, inputs[..., ::2, ::2])


def test_default_is_the_full_input():
    model = build()
    assert model.rec_downsample == 1
    seen = {}
    model.decoder.register_forward_hook(lambda m, args, out: seen.update(out=out))
    loss, inputs = rec_loss(model, batch())
    assert seen['out'].shape == inputs.shape
    torch.testing.assert_close(loss, model.rec_weight * F.mse_loss(seen['out'], inputs))


def test_gradients_reach_the_encoder_not_the_decoder():
    model = build(rec_downsample=2)
    loss, _ = rec_loss(model, batch())
    loss.backward()
    assert all(p.grad is None for p in model.decoder.parameters())
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('bad', [0, -1, 1.5, True, '2'])
def test_bad_downsample_is_refused(bad):
    with pytest.raises(ValueError, match='rec_downsample must be an integer >= 1'):
        build(rec_downsample=bad)
