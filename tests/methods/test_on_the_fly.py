"""OnTheFlyPruner / OneShotMagnitudePruner: arguments, the penalty and its schedule, the cut."""
import pytest
import torch
from torch import nn

from mmrecprune.methods import OneShotMagnitudePruner, OnTheFlyPruner
from mmrecprune.models import ImageClassifier
from mmrecprune.sparsity import gap_statistics, hyperspherical_convs, target_thresholds

pytestmark = pytest.mark.usefixtures('single_thread')
HYPER = dict(type='mmrecprune.HypersphericalConv')


def _classifier(conv_cfg=HYPER, seed=0):
    torch.manual_seed(seed)
    backbone = dict(type='mmdet.ResNet', depth=18, base_channels=8, out_indices=(3, ))
    if conv_cfg:
        backbone['conv_cfg'] = conv_cfg
    return ImageClassifier(backbone=backbone, in_channels=64, num_classes=4)


@pytest.mark.parametrize('kwargs, message', [
    (dict(sparsity=0), 'sparsity must be a fraction in \\(0, 1\\)'),
    (dict(sparsity=1.0), 'sparsity must be a fraction'),
    (dict(sparsity=True), 'sparsity must be a fraction'),
    (dict(sparsity='50%'), 'sparsity must be a fraction'),
    (dict(penalty=-1), 'penalty must be a number >= 0'),
    (dict(margin=-0.1), 'margin must be a number >= 0'),
    (dict(update_interval=0), 'update_interval must be an int >= 1'),
    (dict(warmup_iters=1.5), 'warmup_iters must be an int >= 0'),
    (dict(recovery='median'), 'recovery must be one of'),
    (dict(ranking='random'), 'ranking must be one of'),
])
def test_bad_arguments_are_refused_at_build(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OnTheFlyPruner(**kwargs)


def test_a_model_without_hyperspherical_convs_is_refused_with_the_fix():
    pruner = OnTheFlyPruner()
    with pytest.raises(ValueError, match='conv_cfg=dict\\(type="mmrecprune.HypersphericalConv"'):
        pruner.attach(_classifier(conv_cfg=None))
    with pytest.raises(ValueError, match='no prunable conv weights match'):
        OnTheFlyPruner(include=('neck.*', )).attach(_classifier())


def test_coefficient_ramps_up_then_stays():
    pruner = OnTheFlyPruner(penalty=2.0, warmup_iters=4)
    assert [pruner.coefficient(t) for t in (0, 1, 2, 4, 10)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert OnTheFlyPruner(penalty=2.0).coefficient(0) == 2.0


def test_the_penalty_opens_a_gap_at_the_target_fraction():
    model = _classifier()
    pruner = OnTheFlyPruner(sparsity=0.5, penalty=1.0, update_interval=5)
    pruner.attach(model)
    weights = list(pruner.params.values())
    thresholds = target_thresholds(weights, 0.5)
    for w, t in zip(weights, thresholds):  # the border leaves half of each layer below it
        u = w.detach().flatten(1)
        share = ((u / u.norm(dim=1, keepdim=True)).abs() * u[0].numel() ** 0.5 <= t).float()
        assert abs(share.mean().item() - 0.5) < 0.01
    before = pruner.statistics_of_gap()
    optimizer = torch.optim.SGD(model.backbone.parameters(), lr=2.0)
    for _ in range(30):  # the penalty alone
        optimizer.zero_grad()
        pruner.regularize(torch.zeros(())).backward()
        optimizer.step()
        pruner.after_optimizer_step()
    after = pruner.statistics_of_gap()
    assert after['pruned_magnitude'] < 0.5 * before['pruned_magnitude']
    assert after['gap_ratio'] > 2 * before['gap_ratio']
    assert pruner.iteration == 30 and pruner._thresholds_at == 25  # every 5 steps


def test_the_cut_folds_prunes_each_layer_and_fills():
    model = _classifier()
    pruner = OnTheFlyPruner(sparsity=0.5, recovery='filter_abs_signed')
    pruner.attach(model)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        dense = model(x)
    units = pruner.unit_weights()
    pruner.step()
    assert not hyperspherical_convs(model)  # stem included
    for name, mask in pruner.masks.items():
        assert abs((~mask).float().mean().item() - 0.5) < 0.01
        fill = torch.broadcast_to(pruner.fill_values[name], mask.shape)
        weight = pruner.params[name]
        assert torch.equal(weight[~mask], fill[~mask])
        assert torch.equal(weight[mask], units[name][mask])  # kept entries: as the forward used
        assert fill[~mask].abs().max() > 0
    with torch.no_grad():
        assert not torch.allclose(model(x), dense)  # something was cut
    # training after the cut keeps the fill values
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        model(x).sum().backward()
        pruner.before_optimizer_step()
        optimizer.step()
        pruner.after_optimizer_step()
    for name, mask in pruner.masks.items():
        fill = torch.broadcast_to(pruner.fill_values[name], mask.shape)
        assert torch.equal(pruner.params[name][~mask], fill[~mask])


def test_state_round_trip_resumes_the_schedule_and_the_cut():
    model = _classifier()
    pruner = OnTheFlyPruner(sparsity=0.3, warmup_iters=10, update_interval=3)
    pruner.attach(model)
    for _ in range(4):
        pruner.regularize(torch.zeros(()))
        pruner.after_optimizer_step()
    state = pruner.state_dict()
    twin = OnTheFlyPruner(sparsity=0.3, warmup_iters=10, update_interval=3)
    twin.attach(_classifier())
    twin.load_state_dict(state)
    assert twin.iteration == 4 and twin.coefficient() == pruner.coefficient()
    assert torch.equal(twin.thresholds, pruner.thresholds)
    pruner.step()
    cut = OnTheFlyPruner(sparsity=0.3)
    cut.attach(_classifier())
    cut.load_state_dict(pruner.state_dict())
    assert cut.pruned and not hyperspherical_convs(cut.model)
    for n in pruner.masks:
        assert torch.equal(cut.masks[n], pruner.masks[n])
        assert torch.equal(cut.fill_values[n], pruner.fill_values[n])


def test_one_shot_magnitude_on_an_ordinary_model():
    model = _classifier(conv_cfg=None)
    pruner = OneShotMagnitudePruner(sparsity=0.7)
    pruner.attach(model)
    raw = {n: p.detach().abs().clone() for n, p in pruner.params.items()}
    pruner.step()
    for name, mask in pruner.masks.items():
        assert abs((~mask).float().mean().item() - 0.7) < 0.01
        assert raw[name][~mask].max() <= raw[name][mask].min()  # the smallest went
        assert not pruner.params[name][~mask].any()
    stats = gap_statistics([raw[n] for n in raw], [pruner.masks[n] for n in raw])
    assert stats['gap_ratio'] > 1
    with pytest.raises(RuntimeError, match='no ticket before the pruning step'):
        fresh = OneShotMagnitudePruner()
        fresh.attach(_classifier(conv_cfg=None))
        fresh.ticket_content()
    assert isinstance(model.backbone.layer1[0].conv1, nn.Conv2d)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='AmpOptimWrapper needs a GPU')
def test_penalty_gradient_is_the_same_under_amp_loss_scaling():
    """The penalty joins the loss before AMP scales it, so after unscaling its gradient is the
    fp32 one (head-free: the loss is the penalty alone)."""
    from mmengine.optim import OptimWrapper

    from mmrecprune.optim import AmpPruningOptimWrapper
    grads = []
    for amp in (False, True):
        model = _classifier().cuda()
        pruner = OnTheFlyPruner(sparsity=0.5, penalty=1.0)
        pruner.attach(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        if amp:
            wrapper = AmpPruningOptimWrapper(optimizer=optimizer, loss_scale=1024.0)
        else:
            from mmrecprune.optim import PruningOptimWrapper
            wrapper = PruningOptimWrapper(optimizer=optimizer)
        assert isinstance(wrapper, OptimWrapper)
        wrapper.attach(pruner)
        wrapper.backward(wrapper.scale_loss(torch.zeros((), device='cuda')))
        if amp:
            wrapper.loss_scaler.unscale_(optimizer)
        grads.append(next(iter(pruner.params.values())).grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-6)
