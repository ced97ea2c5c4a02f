"""``reinitialise``: seeded random weights, fresh BN statistics, the global RNG left alone."""
import torch
from torch import nn

from mmrecprune.sparsity import reinitialise


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))


def test_same_seed_same_weights_and_rng_untouched():
    a, b = _net(), _net()
    b[1].running_mean.fill_(3.0)
    b[1].num_batches_tracked.fill_(7)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    reinitialise(a, seed=5)
    reinitialise(b, seed=5)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG did not move
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert torch.equal(b[1].running_mean, torch.zeros(4))
    assert int(b[1].num_batches_tracked) == 0
    c = _net()
    reinitialise(c, seed=6)
    assert not torch.equal(c[0].weight, a[0].weight)


def test_init_weights_is_preferred_and_rerun():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self._is_init = True  # as MMEngine marks a module it has initialised

        def init_weights(self):
            assert not self._is_init
            nn.init.constant_(self.conv.weight, 0.25)

    m = Custom()
    reinitialise(m, seed=0)
    assert torch.equal(m.conv.weight, torch.full_like(m.conv.weight, 0.25))


def test_mmengine_module_logs_quietly():
    from mmengine.logging import MMLogger
    from mmengine.model import BaseModule

    class Net(BaseModule):
        def __init__(self):
            super().__init__(init_cfg=dict(type='Constant', layer='Conv2d', val=0.5))
            self.conv = nn.Conv2d(1, 1, 1)

    logger = MMLogger.get_current_instance()
    level = logger.level
    net = Net()
    reinitialise(net, seed=0)
    assert torch.equal(net.conv.weight, torch.full_like(net.conv.weight, 0.5))
    assert logger.level == level
